//! Parsers for single config values, shared by the file and the environment so both give the
//! same verdict on the same text.

use std::net::{SocketAddr, ToSocketAddrs};

/// An upstream base URL reduced to what the proxy needs: plain HTTP host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// The URL as the operator wrote it, without a trailing slash (used in logs and metrics).
    pub base: String,
    /// `host:port`, sent upstream as `Host` (Ollama refuses hosts it does not know).
    pub authority: String,
    pub host: String,
    pub port: u16,
}

/// `host:port` with a numeric or named host; names are resolved once here (off the request path).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port, e.g. 0.0.0.0:8080".to_string())?;
    port.parse::<u16>()
        .map_err(|_| format!("port \"{port}\" is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err("expected host:port, e.g. 0.0.0.0:8080".into());
    }
    text.to_socket_addrs()
        .map_err(|e| format!("cannot resolve \"{host}\": {e}"))?
        .next()
        .ok_or_else(|| format!("\"{host}\" resolves to no address"))
}

/// An `http://host[:port][/]` URL. HTTPS upstreams and paths are refused rather than ignored.
pub fn parse_upstream_url(text: &str) -> Result<UpstreamUrl, String> {
    let trimmed = text.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .ok_or_else(|| "expected an http:// URL such as http://127.0.0.1:11434".to_string())?;
    if rest.is_empty() {
        return Err("the URL has no host".into());
    }
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err("a path is not supported here: give only scheme, host and port".into());
    }
    if rest.contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    let (host, port) = split_host_port(rest)?;
    Ok(UpstreamUrl {
        base: format!("http://{rest}"),
        authority: format!("{host}:{port}"),
        host,
        port,
    })
}

fn split_host_port(rest: &str) -> Result<(String, u16), String> {
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed [ in IPv6 address".to_string())?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if after.is_empty() => 80,
            None => return Err(format!("unexpected \"{after}\" after the address")),
        };
        return Ok((format!("[{host}]"), port));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_string(), parse_port(port)?)),
        None => Ok((rest.to_string(), 80)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port \"{text}\" is not a number from 1 to 65535")),
        Ok(p) => Ok(p),
    }
}

/// A whole number within `min..=max`, with a message that says the allowed range.
pub fn in_range(value: i64, min: i64, max: i64) -> Result<u64, String> {
    if value < min || value > max {
        return Err(format!("{value} is out of range: expected {min} to {max}"));
    }
    u64::try_from(value).map_err(|_| format!("{value} must not be negative"))
}

/// Booleans as operators write them in environment variables.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

pub fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected \"text\" or \"json\"".into()),
    }
}

pub fn parse_log_level(text: &str) -> Result<String, String> {
    let level = text.trim().to_ascii_lowercase();
    match level.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(level),
        _ => Err("expected one of error, warn, info, debug, trace, off".into()),
    }
}

/// `redis://host[:port][/db]` or `rediss://...`.
pub fn parse_balance(text: &str) -> Result<super::Balance, String> {
    match text {
        "cache_aware" => Ok(super::Balance::CacheAware),
        "least_busy" => Ok(super::Balance::LeastBusy),
        "round_robin" => Ok(super::Balance::RoundRobin),
        _ => Err("expected \"cache_aware\", \"least_busy\" or \"round_robin\"".into()),
    }
}

/// Braces are Redis Cluster's hash-tag marks: the gateway tags each key with its org so one
/// script's keys share a slot, and a brace in the prefix would change which part is the tag.
pub fn parse_key_prefix(text: &str) -> Result<String, String> {
    if text.contains(['{', '}']) {
        Err("must not contain { or } (they mark Redis Cluster hash tags)".into())
    } else {
        Ok(text.to_string())
    }
}

pub fn parse_failure_mode(text: &str) -> Result<super::FailureMode, String> {
    match text {
        "fail_open" => Ok(super::FailureMode::Open),
        "fail_closed" => Ok(super::FailureMode::Closed),
        _ => Err("expected \"fail_open\" or \"fail_closed\"".into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = parse_upstream_url("http://127.0.0.1:11434/").expect("valid");
        assert_eq!(u.authority, "127.0.0.1:11434");
        assert_eq!(u.base, "http://127.0.0.1:11434");
        let u = parse_upstream_url("http://gpu-1").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("gpu-1", 80));
        let u = parse_upstream_url("http://[::1]:11434").expect("valid");
        assert_eq!(u.authority, "[::1]:11434");
        assert!(parse_upstream_url("https://x:1").is_err());
        assert!(parse_upstream_url("http://x:1/api").is_err());
        assert!(parse_upstream_url("http://x:99999").is_err());
        assert!(parse_upstream_url("127.0.0.1:11434").is_err());
        assert!(parse_upstream_url("http://").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert!(parse_listen("0.0.0.0:8080").is_ok());
        assert!(parse_listen("[::1]:8080").is_ok());
        assert!(parse_listen("localhost:8080").is_ok());
        assert!(parse_listen("8080").is_err());
        assert!(parse_listen("0.0.0.0:http").is_err());
    }

    #[test]
    fn ranges_and_bools() {
        assert_eq!(in_range(5, 1, 10), Ok(5));
        assert!(in_range(0, 1, 10).is_err());
        assert!(in_range(-1, 0, 10).is_err());
        assert_eq!(parse_bool("TRUE"), Ok(true));
        assert!(parse_bool("maybe").is_err());
    }
}
