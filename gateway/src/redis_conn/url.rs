//! The forms `REDIS_URL` takes: one server (`redis://`, `rediss://`, `unix://`), a cluster as
//! several comma-separated node URLs, or a Sentinel-managed primary
//! (`redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/<db>]`).

/// Where the gateway's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    /// Seed nodes: the client learns the rest of the cluster from them.
    Cluster(Vec<String>),
    Sentinel {
        /// `redis://host:port` of each sentinel.
        sentinels: Vec<String>,
        service: String,
        db: i64,
        username: Option<String>,
        password: Option<String>,
    },
}

const SENTINEL: &str = "redis+sentinel://";

/// Parses `REDIS_URL`; the error says what was expected.
pub fn parse(text: &str) -> Result<RedisTarget, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix(SENTINEL) {
        return sentinel(rest);
    }
    let nodes: Vec<String> = text.split(',').map(|s| s.trim().to_string()).collect();
    for n in &nodes {
        let ok = ["redis://", "rediss://", "unix://"]
            .iter()
            .any(|p| n.starts_with(p) && n.len() > p.len());
        if !ok {
            return Err(format!(
                "\"{n}\": expected redis://host:port, several of them comma-separated (a cluster), \
                 or {SENTINEL}host:port/<service>"
            ));
        }
        redis::Client::open(n.as_str()).map_err(|e| format!("\"{n}\": {e}"))?;
    }
    Ok(match nodes.len() {
        1 => RedisTarget::Single(nodes.into_iter().next().unwrap_or_default()),
        _ => RedisTarget::Cluster(nodes),
    })
}

fn sentinel(rest: &str) -> Result<RedisTarget, String> {
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("{SENTINEL}: the service name is missing (…/mymaster)"))?;
    let mut parts = path.split('/');
    let service = parts.next().unwrap_or_default().to_string();
    if service.is_empty() {
        return Err(format!(
            "{SENTINEL}: the service name is missing (…/mymaster)"
        ));
    }
    let db = match parts.next().filter(|s| !s.is_empty()) {
        Some(d) => d
            .parse()
            .map_err(|_| format!("{SENTINEL}: database \"{d}\" is not a number"))?,
        None => 0,
    };
    let sentinels: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.trim().is_empty())
        .map(|h| format!("redis://{}", h.trim()))
        .collect();
    if sentinels.is_empty() {
        return Err(format!("{SENTINEL}: no sentinel host:port given"));
    }
    let (username, password) = match auth.map(|a| a.split_once(':')) {
        Some(Some((u, p))) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
        Some(None) => (None, auth.map(str::to_string)),
        None => (None, None),
    };
    Ok(RedisTarget::Sentinel {
        sentinels,
        service,
        db,
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_a_cluster_and_a_sentinel() {
        assert_eq!(
            parse("redis://127.0.0.1:6379/2"),
            Ok(RedisTarget::Single("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            parse("redis://10.0.0.1:6379, redis://10.0.0.2:6379"),
            Ok(RedisTarget::Cluster(vec![
                "redis://10.0.0.1:6379".into(),
                "redis://10.0.0.2:6379".into()
            ]))
        );
        assert_eq!(
            parse("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/1"),
            Ok(RedisTarget::Sentinel {
                sentinels: vec![
                    "redis://10.0.0.1:26379".into(),
                    "redis://10.0.0.2:26379".into()
                ],
                service: "mymaster".into(),
                db: 1,
                username: None,
                password: Some("s3cret".into()),
            })
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse("http://x").unwrap_err().contains("\"http://x\""));
        assert!(parse("redis://a:1,").unwrap_err().contains("expected"));
        assert!(parse("redis+sentinel://h:26379")
            .unwrap_err()
            .contains("service"));
        assert!(parse("redis+sentinel://h:26379/m/x")
            .unwrap_err()
            .contains("\"x\""));
    }
}
