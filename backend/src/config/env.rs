//! Environment overrides (12-factor): every variable beats the file. The variables are the
//! gateway's where the meaning is shared (`JWT_*`, `LOG_*`, `DATABASE_URL`,
//! `ORG_*_TOKEN_LIMIT`), so one environment can configure both processes.

use std::time::Duration;

use super::{
    parse_database_url, parse_http_url, parse_listen, parse_log_format, parse_log_level, Config,
    ConfigError,
};

/// Applies the variables `var` knows of (empty values count as unset).
pub fn apply(config: &mut Config, var: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let parsed = |name: &str, parse: fn(&str) -> Result<String, String>| {
        get(name)
            .map(|v| parse(&v).map_err(|r| ConfigError::in_env(name, &v, r)))
            .transpose()
    };

    if let Some(v) = get("BACKEND_LISTEN") {
        config.listen =
            parse_listen(&v).map_err(|r| ConfigError::in_env("BACKEND_LISTEN", &v, r))?;
    }
    if let Some(url) = parsed("DATABASE_URL", parse_database_url)? {
        config.database.url = Some(url);
    }
    if let Some(n) = number(&get, "DATABASE_POOL_SIZE", 1, 1000)? {
        config.database.pool_size = n as u32;
        config.database.min_idle = config.database.min_idle.min(n as u32);
    }
    if let Some(url) = parsed("GATEWAY_URL", parse_http_url)? {
        config.gateway.url = url;
    }
    let auth = &mut config.auth.jwt;
    if let Some(v) = get("JWT_SECRET") {
        auth.hs256_secret = Some(v);
    }
    if let Some(v) = get("JWT_PUBLIC_KEY_FILE") {
        auth.public_key_file = Some(v.into());
    }
    if let Some(url) = parsed("JWKS_URL", parse_http_url)? {
        auth.jwks_url = Some(url);
    }
    if let Some(v) = get("JWT_ISSUER") {
        auth.issuer = Some(v);
    }
    if let Some(v) = get("JWT_AUDIENCE") {
        auth.audience = Some(v);
    }
    if let Some(v) = get("API_KEY_PEPPER") {
        // The value is a secret: never printed, not even when refused.
        let pepper = corral_auth::api_key::Pepper::new(&v)
            .map_err(|r| ConfigError::in_env("API_KEY_PEPPER", "<redacted>", r))?;
        config.auth.api_key_pepper = Some(pepper);
    }
    if let Some(n) = number(&get, "ORG_SOFT_TOKEN_LIMIT", 0, i64::MAX)? {
        config.soft_token_limit = Some(n);
    }
    if let Some(n) = number(&get, "ORG_HARD_TOKEN_LIMIT", 0, i64::MAX)? {
        config.hard_token_limit = Some(n);
    }
    if let Some(n) = number(&get, "RETENTION_DAYS", 1, 36_500)? {
        config.retention_days = n as u32;
    }
    if let Some(n) = number(&get, "RETENTION_INTERVAL_S", 1, 30 * 86_400)? {
        config.retention_interval = Duration::from_secs(n);
    }
    if let Some(level) = parsed("LOG_LEVEL", parse_log_level)? {
        config.log_level = level;
    }
    if let Some(v) = get("LOG_FORMAT") {
        config.log_format =
            parse_log_format(&v).map_err(|r| ConfigError::in_env("LOG_FORMAT", &v, r))?;
    }
    Ok(())
}

fn number(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    min: i64,
    max: i64,
) -> Result<Option<u64>, ConfigError> {
    let Some(text) = get(name) else {
        return Ok(None);
    };
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| ConfigError::in_env(name, &text, "expected a whole number"))?;
    if n < min || n > max {
        return Err(ConfigError::in_env(
            name,
            &text,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(Some(n as u64))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

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
    fn variables_override() {
        let c = with(&[
            ("BACKEND_LISTEN", "127.0.0.1:9999"),
            ("DATABASE_URL", "postgres://u@h/db"),
            ("GATEWAY_URL", "http://gw:8080/"),
            ("ORG_HARD_TOKEN_LIMIT", "1000"),
            ("LOG_FORMAT", "json"),
            ("JWT_SECRET", "s"),
        ])
        .expect("valid");
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.database.url.as_deref(), Some("postgres://u@h/db"));
        assert_eq!(c.gateway.url, "http://gw:8080");
        assert_eq!(c.hard_token_limit, Some(1000));
        assert_eq!(c.soft_token_limit, None);
        assert_eq!(c.log_format, super::super::LogFormat::Json);
        assert_eq!(c.auth.jwt.hs256_secret.as_deref(), Some("s"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = with(&[("BACKEND_LISTEN", "nope")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("env: BACKEND_LISTEN=\"nope\" is not valid"),
            "{e}"
        );
        let e = with(&[("ORG_SOFT_TOKEN_LIMIT", "-1")]).unwrap_err();
        assert!(e.to_string().contains("ORG_SOFT_TOKEN_LIMIT"), "{e}");
        let e = with(&[("DATABASE_URL", "postgres://h:notaport/db")]).unwrap_err();
        assert!(e.to_string().contains("DATABASE_URL"), "{e}");
    }
}
