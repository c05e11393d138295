//! Environment overrides (12-factor): each variable replaces one config value, and a bad value
//! is reported as `NAME="value" is not valid: reason`.

use super::cors::parse_origin;
use super::values;
use super::{CertFiles, Config, ConfigError, OriginRule, TlsConfig};

/// Applies the variables found by `get` onto `config`.
pub fn apply(config: &mut Config, get: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    if let Some(v) = var("GATEWAY_LISTEN") {
        config.listen =
            values::parse_listen(&v).map_err(|m| ConfigError::in_env("GATEWAY_LISTEN", &v, m))?;
    }
    if let Some(v) = var("GATEWAY_THREADS") {
        config.threads = number(&v, "GATEWAY_THREADS", 1, 1024)? as usize;
    }
    if let Some(v) = var("GATEWAY_MAX_BODY_BYTES") {
        config.max_body_bytes = number(&v, "GATEWAY_MAX_BODY_BYTES", 1024, 1 << 32)? as usize;
    }
    if let Some(v) = var("GATEWAY_MAX_INFLIGHT_PER_INSTANCE") {
        config.pool.max_inflight_per_instance =
            number(&v, "GATEWAY_MAX_INFLIGHT_PER_INSTANCE", 1, 100_000)? as usize;
    }
    if let Some(v) = var("GATEWAY_POOL_BALANCE") {
        config.pool.balance = values::parse_balance(&v)
            .map_err(|m| ConfigError::in_env("GATEWAY_POOL_BALANCE", &v, m))?;
    }
    if let Some(v) = var("OLLAMA_BASE_URL") {
        config.pool.instances = instances(&v)?;
    }
    if let Some(v) = var("BACKEND_URL") {
        config.backend = Some(
            values::parse_upstream_url(&v)
                .map_err(|m| ConfigError::in_env("BACKEND_URL", &v, m))?,
        );
    }
    if let Some(v) = var("PROMETHEUS_ENABLED") {
        config.metrics_enabled =
            values::parse_bool(&v).map_err(|m| ConfigError::in_env("PROMETHEUS_ENABLED", &v, m))?;
    }
    if let Some(v) = var("CONSOLE_ENABLED") {
        config.console.enabled =
            values::parse_bool(&v).map_err(|m| ConfigError::in_env("CONSOLE_ENABLED", &v, m))?;
    }
    if let Some(v) = var("LOG_LEVEL") {
        config.log_level =
            values::parse_log_level(&v).map_err(|m| ConfigError::in_env("LOG_LEVEL", &v, m))?;
    }
    apply_edge(config, &var)?;
    if let Some(v) = var("LOG_FORMAT") {
        config.log_format =
            values::parse_log_format(&v).map_err(|m| ConfigError::in_env("LOG_FORMAT", &v, m))?;
    }
    Ok(())
}

/// TLS, CORS and JWT variables.
fn apply_edge(
    config: &mut Config,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let cert = var("TLS_CERT_FILE");
    let key = var("TLS_KEY_FILE");
    if let Some(v) = var("GATEWAY_TLS_LISTEN") {
        let addr = values::parse_listen(&v)
            .map_err(|m| ConfigError::in_env("GATEWAY_TLS_LISTEN", &v, m))?;
        match config.tls.as_mut() {
            Some(tls) => tls.listen = addr,
            None => {
                let (Some(c), Some(k)) = (&cert, &key) else {
                    return Err(ConfigError::in_env(
                        "GATEWAY_TLS_LISTEN",
                        &v,
                        "needs TLS_CERT_FILE and TLS_KEY_FILE (or tls.cert_file and tls.key_file)",
                    ));
                };
                config.tls = Some(TlsConfig {
                    listen: addr,
                    default_cert: CertFiles {
                        cert_file: c.into(),
                        key_file: k.into(),
                    },
                    certificates: Vec::new(),
                    hsts: Some("max-age=31536000".into()),
                    redirect_http: false,
                    watch_interval: std::time::Duration::from_secs(1),
                });
            }
        }
    }
    if let Some(tls) = config.tls.as_mut() {
        if let Some(c) = cert {
            tls.default_cert.cert_file = c.into();
        }
        if let Some(k) = key {
            tls.default_cert.key_file = k.into();
        }
    }
    if let Some(v) = var("CORS_ORIGINS") {
        let mut origins = Vec::new();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            origins.push(parse_origin(part).map_err(|m| {
                ConfigError::in_env("CORS_ORIGINS", &v, format!("\"{part}\": {m}"))
            })?);
        }
        if config.cors.allow_credentials && origins.contains(&OriginRule::Any) {
            return Err(ConfigError::in_env(
                "CORS_ORIGINS",
                &v,
                "\"*\" is not allowed with cors.allow_credentials",
            ));
        }
        config.cors.origins = origins;
    }
    if let Some(v) = var("POLICIES_DIR") {
        config.policies.dir = v.into();
    }
    if let Some(v) = var("ORG_SOFT_TOKEN_LIMIT") {
        config.policies.soft_tokens = Some(number(&v, "ORG_SOFT_TOKEN_LIMIT", 0, i64::MAX)?);
    }
    if let Some(v) = var("ORG_HARD_TOKEN_LIMIT") {
        config.policies.hard_tokens = Some(number(&v, "ORG_HARD_TOKEN_LIMIT", 0, i64::MAX)?);
    }
    if let Some(v) = var("REDIS_URL") {
        crate::redis_conn::url::parse(&v).map_err(|m| ConfigError::in_env("REDIS_URL", &v, m))?;
        config.redis.url = Some(v);
    }
    if let Some(v) = var("DATABASE_URL") {
        if !v.starts_with("postgres://") && !v.starts_with("postgresql://") && !v.contains('=') {
            return Err(ConfigError::in_env(
                "DATABASE_URL",
                "<hidden>",
                "expected postgres://user@host:port/db",
            ));
        }
        config.quota.database_url = Some(v);
    }
    if let Some(v) = var("REDIS_KEY_PREFIX") {
        config.redis.key_prefix = values::parse_key_prefix(&v)
            .map_err(|m| ConfigError::in_env("REDIS_KEY_PREFIX", &v, m))?;
    }
    let auth = &mut config.auth;
    if let Some(v) = var("JWT_SECRET") {
        auth.jwt.hs256_secret = Some(v);
    }
    if let Some(v) = var("API_KEY_PEPPER") {
        // A secret: never printed, not even when refused.
        let pepper = corral_auth::api_key::Pepper::new(&v)
            .map_err(|m| ConfigError::in_env("API_KEY_PEPPER", "<hidden>", m))?;
        auth.api_key_pepper = Some(pepper);
    }
    if let Some(v) = var("JWT_PUBLIC_KEY_FILE") {
        auth.jwt.public_key_file = Some(v.into());
    }
    if let Some(v) = var("JWKS_URL") {
        if !v.starts_with("http://") && !v.starts_with("https://") {
            return Err(ConfigError::in_env(
                "JWKS_URL",
                &v,
                "expected an http(s) URL",
            ));
        }
        auth.jwt.jwks_url = Some(v);
    }
    if let Some(v) = var("JWT_ISSUER") {
        auth.jwt.issuer = Some(v);
    }
    if let Some(v) = var("JWT_AUDIENCE") {
        auth.jwt.audience = Some(v);
    }
    Ok(())
}

fn number(text: &str, name: &str, min: i64, max: i64) -> Result<u64, ConfigError> {
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| ConfigError::in_env(name, text, "expected a whole number"))?;
    values::in_range(n, min, max).map_err(|m| ConfigError::in_env(name, text, m))
}

fn instances(text: &str) -> Result<Vec<values::UpstreamUrl>, ConfigError> {
    let mut list: Vec<values::UpstreamUrl> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let url = values::parse_upstream_url(part).map_err(|m| {
            ConfigError::in_env("OLLAMA_BASE_URL", text, format!("\"{part}\": {m}"))
        })?;
        if list.iter().any(|u| u.base == url.base) {
            return Err(ConfigError::in_env(
                "OLLAMA_BASE_URL",
                text,
                format!("\"{part}\" is listed twice"),
            ));
        }
        list.push(url);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut c = Config::default();
        apply(&mut c, &|k| map.get(k).cloned())?;
        Ok(c)
    }

    #[test]
    fn overrides_apply() {
        let c = with(&[
            ("GATEWAY_LISTEN", "127.0.0.1:9999"),
            ("OLLAMA_BASE_URL", "http://127.0.0.1:1, http://127.0.0.1:2"),
            ("LOG_FORMAT", "json"),
        ])
        .expect("valid");
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.pool.instances.len(), 2);
        assert_eq!(c.log_format, values::LogFormat::Json);
    }

    #[test]
    fn bad_variables_are_named() {
        let e = with(&[("OLLAMA_BASE_URL", "http://a:1,localhost:2")]).expect_err("invalid");
        assert!(
            e.to_string()
                .contains("OLLAMA_BASE_URL=\"http://a:1,localhost:2\""),
            "{e}"
        );
        let e = with(&[("GATEWAY_MAX_INFLIGHT_PER_INSTANCE", "-3")]).expect_err("invalid");
        assert!(
            e.to_string()
                .contains("GATEWAY_MAX_INFLIGHT_PER_INSTANCE=\"-3\""),
            "{e}"
        );
        let e = with(&[("PROMETHEUS_ENABLED", "perhaps")]).expect_err("invalid");
        assert!(e.to_string().contains("expected true or false"), "{e}");
    }
}
