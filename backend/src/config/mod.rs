//! Configuration: the file (`file.rs`), then environment overrides (`env.rs`), validated once
//! into [`Config`], the only form the rest of the backend sees.

mod env;
mod error;
mod file;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;

use error::line_of;
use file::FileConfig;
use toml::Spanned;

/// Where the config file is looked for when `--config` is not given. A missing default file
/// is fine (defaults and environment apply); a missing `--config` file is an error.
pub const DEFAULT_PATH: &str = "conf/backend.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// PostgreSQL settings. The URL is required; the rest tune the bb8 pool.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`; `None` until the file or the environment sets it.
    pub url: Option<String>,
    pub pool_size: u32,
    pub min_idle: u32,
    pub connect_timeout: Duration,
    /// How long a request waits for a pooled connection before it gets 503.
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    /// Read migrations from this folder instead of the ones built into the binary.
    pub migrations_dir: Option<PathBuf>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(crate::db::redact_url))
            .field("pool_size", &self.pool_size)
            .field("min_idle", &self.min_idle)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("migrations_dir", &self.migrations_dir)
            .finish()
    }
}

/// Who may call: the JWT settings are the gateway's own type (same variables, same claim
/// rules); the rest is what only the backend needs.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt: corral_auth::AuthSettings,
    /// Roles that make a caller an admin of their org (sees the org's conversations, reads
    /// its usage, manages its API keys).
    pub admin_roles: Vec<String>,
    /// Roles that make a caller an operator: reads the usage and audit log of any org and
    /// manages any org's API keys. Only an operator may give a key one of these roles.
    pub operator_roles: Vec<String>,
    /// `API_KEY_PEPPER`: the server secret API keys are hashed with (the gateway's too).
    /// Without it, API keys are neither accepted nor managed.
    pub api_key_pepper: Option<corral_auth::api_key::Pepper>,
}

#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub max_title_chars: usize,
    pub max_message_bytes: usize,
    /// Most recent messages of a conversation sent to the model with each new message.
    pub history_messages: usize,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub url: String,
    pub connect_timeout: Duration,
    /// Longest silence from the gateway in the middle of a reply.
    pub read_timeout: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub source: String,
    pub listen: SocketAddr,
    /// On SIGTERM, how long in-flight chat streams may run before the process exits.
    pub grace_period: Duration,
    pub database: DatabaseConfig,
    pub gateway: GatewayConfig,
    pub auth: AuthConfig,
    pub chat: ChatConfig,
    pub soft_token_limit: Option<u64>,
    pub hard_token_limit: Option<u64>,
    pub retention_days: u32,
    pub retention_interval: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            source: "defaults".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            grace_period: Duration::from_secs(30),
            database: DatabaseConfig {
                url: None,
                pool_size: 16,
                min_idle: 1,
                connect_timeout: Duration::from_secs(2),
                acquire_timeout: Duration::from_secs(2),
                statement_timeout: Duration::from_secs(15),
                migrations_dir: None,
            },
            gateway: GatewayConfig {
                url: "http://127.0.0.1:8080".into(),
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(300),
            },
            auth: AuthConfig {
                jwt: corral_auth::AuthSettings::default(),
                admin_roles: vec!["admin".into()],
                operator_roles: vec!["operator".into()],
                api_key_pepper: None,
            },
            chat: ChatConfig {
                max_title_chars: 200,
                max_message_bytes: 100 * 1024,
                history_messages: 100,
            },
            soft_token_limit: None,
            hard_token_limit: None,
            retention_days: 90,
            retention_interval: Duration::from_secs(3600),
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads `path` (or the default file when it exists), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (name, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError::in_file(&p.display().to_string(), None, e.to_string())
                })?;
                (p.display().to_string(), Some(text))
            }
            None => match std::fs::read_to_string(DEFAULT_PATH) {
                Ok(text) => (DEFAULT_PATH.to_owned(), Some(text)),
                Err(_) => ("defaults".to_owned(), None),
            },
        };
        let mut config = match text {
            Some(text) => Config::from_toml(&name, &text)?,
            None => Config::default(),
        };
        env::apply(&mut config, &|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Parses and validates a config file's text (`name` is used in messages).
    pub fn from_toml(name: &str, text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            ConfigError::in_file(name, line_of(text, e.span()), e.message().to_owned())
        })?;
        let v = Validator { name, text };
        let mut c = Config {
            source: name.to_owned(),
            ..Config::default()
        };
        let s = &file.server;
        if let Some(listen) = &s.listen {
            c.listen = v.parse(listen, "server.listen", parse_listen)?;
        }
        if let Some(n) = v.int(&s.grace_period_s, "server.grace_period_s", 0, 3600)? {
            c.grace_period = Duration::from_secs(n);
        }

        let d = &file.database;
        let db = &mut c.database;
        if let Some(url) = &d.url {
            db.url = Some(v.parse(url, "database.url", parse_database_url)?);
        }
        if let Some(n) = v.int(&d.pool_size, "database.pool_size", 1, 1000)? {
            db.pool_size = n as u32;
        }
        if let Some(n) = v.int(&d.min_idle, "database.min_idle", 0, 1000)? {
            db.min_idle = n as u32;
        }
        let ms = |field: &Int, key: &str, min: i64| -> Result<Option<Duration>, ConfigError> {
            Ok(v.int(field, key, min, 3_600_000)?
                .map(Duration::from_millis))
        };
        if let Some(t) = ms(&d.connect_timeout_ms, "database.connect_timeout_ms", 1)? {
            db.connect_timeout = t;
        }
        if let Some(t) = ms(&d.acquire_timeout_ms, "database.acquire_timeout_ms", 1)? {
            db.acquire_timeout = t;
        }
        if let Some(t) = ms(&d.statement_timeout_ms, "database.statement_timeout_ms", 0)? {
            db.statement_timeout = t;
        }
        if let Some(dir) = &d.migrations_dir {
            db.migrations_dir = Some(PathBuf::from(dir.get_ref()));
        }
        if db.min_idle > db.pool_size {
            return Err(v.at(
                d.min_idle.as_ref().map(Spanned::span),
                format!(
                    "database.min_idle = {} is larger than database.pool_size = {}",
                    db.min_idle, db.pool_size
                ),
            ));
        }

        let g = &file.gateway;
        if let Some(url) = &g.url {
            c.gateway.url = v.parse(url, "gateway.url", parse_http_url)?;
        }
        if let Some(t) = ms(&g.connect_timeout_ms, "gateway.connect_timeout_ms", 1)? {
            c.gateway.connect_timeout = t;
        }
        if let Some(n) = v.int(&g.read_timeout_s, "gateway.read_timeout_s", 1, 86_400)? {
            c.gateway.read_timeout = Duration::from_secs(n);
        }

        let a = &file.auth;
        let auth = &mut c.auth.jwt;
        auth.hs256_secret.clone_from(&a.secret);
        if let Some(p) = &a.public_key_file {
            auth.public_key_file = Some(PathBuf::from(p.get_ref()));
        }
        if let Some(url) = &a.jwks_url {
            auth.jwks_url = Some(v.parse(url, "auth.jwks_url", parse_http_url)?);
        }
        auth.issuer.clone_from(&a.issuer);
        auth.audience.clone_from(&a.audience);
        if let Some(n) = v.int(&a.leeway_s, "auth.leeway_s", 0, 3600)? {
            auth.leeway = Duration::from_secs(n);
        }
        if let Some(name) = &a.org_claim {
            auth.org_claim = name.clone();
        }
        if let Some(name) = &a.user_claim {
            auth.user_claim = name.clone();
        }
        if let Some(name) = &a.role_claim {
            auth.role_claim = (!name.is_empty()).then(|| name.clone());
        }
        if let Some(roles) = &a.admin_roles {
            c.auth.admin_roles = roles.clone();
        }
        if let Some(roles) = &a.operator_roles {
            c.auth.operator_roles = v.roles(roles, "auth.operator_roles")?;
        }

        let ch = &file.chat;
        if let Some(n) = v.int(&ch.max_title_chars, "chat.max_title_chars", 1, 10_000)? {
            c.chat.max_title_chars = n as usize;
        }
        let max_msg = v.int(
            &ch.max_message_bytes,
            "chat.max_message_bytes",
            1,
            16 * 1024 * 1024,
        )?;
        if let Some(n) = max_msg {
            c.chat.max_message_bytes = n as usize;
        }
        if let Some(n) = v.int(&ch.history_messages, "chat.history_messages", 1, 100_000)? {
            c.chat.history_messages = n as usize;
        }

        let u = &file.usage;
        let max = i64::MAX;
        c.soft_token_limit = v.int(&u.soft_token_limit, "usage.soft_token_limit", 0, max)?;
        c.hard_token_limit = v.int(&u.hard_token_limit, "usage.hard_token_limit", 0, max)?;

        let r = &file.retention;
        if let Some(n) = v.int(&r.days, "retention.days", 1, 36_500)? {
            c.retention_days = n as u32;
        }
        if let Some(n) = v.int(&r.interval_s, "retention.interval_s", 1, 30 * 86_400)? {
            c.retention_interval = Duration::from_secs(n);
        }

        let l = &file.log;
        if let Some(level) = &l.level {
            c.log_level = v.parse(level, "log.level", parse_log_level)?;
        }
        if let Some(format) = &l.format {
            c.log_format = v.parse(format, "log.format", parse_log_format)?;
        }
        Ok(c)
    }

    /// The database URL, or the error naming `DATABASE_URL` that `migrate`/`serve`/`seed`
    /// report when it was set nowhere.
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database.url.as_deref().ok_or_else(|| {
            ConfigError::missing(format!(
                "DATABASE_URL is not set (set the variable, or database.url in {}), e.g. \
                 DATABASE_URL=postgres://postgres@127.0.0.1:5432/corral",
                if self.source == "defaults" {
                    DEFAULT_PATH
                } else {
                    &self.source
                }
            ))
        })
    }
}

type Int = Option<Spanned<i64>>;

/// Turns file values into checked ones, with errors that name the file, line and key.
struct Validator<'a> {
    name: &'a str,
    text: &'a str,
}

impl Validator<'_> {
    fn at(&self, span: Option<std::ops::Range<usize>>, message: String) -> ConfigError {
        ConfigError::in_file(self.name, line_of(self.text, span), message)
    }

    fn parse<T>(
        &self,
        value: &Spanned<String>,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(value.get_ref()).map_err(|reason| {
            self.at(
                Some(value.span()),
                format!("{key} = \"{}\": {reason}", value.get_ref()),
            )
        })
    }

    /// A list of role names: each a non-empty string without surrounding spaces (roles are
    /// compared exactly, so `" operator"` would silently be another role).
    fn roles(&self, value: &Spanned<Vec<String>>, key: &str) -> Result<Vec<String>, ConfigError> {
        let roles = value.get_ref();
        match roles
            .iter()
            .find(|r| r.is_empty() || r.trim() != r.as_str())
        {
            Some(bad) => Err(self.at(
                Some(value.span()),
                format!("{key}: \"{bad}\" is not a role name (empty, or spaces around it)"),
            )),
            None => Ok(roles.clone()),
        }
    }

    fn int(&self, value: &Int, key: &str, min: i64, max: i64) -> Result<Option<u64>, ConfigError> {
        let Some(v) = value else {
            return Ok(None);
        };
        let n = *v.get_ref();
        if n < min || n > max {
            return Err(self.at(
                Some(v.span()),
                format!("{key} = {n}: must be between {min} and {max}"),
            ));
        }
        Ok(Some(n as u64))
    }
}

pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| "expected host:port with an IP address, e.g. 0.0.0.0:8081".into())
}

pub(crate) fn parse_http_url(text: &str) -> Result<String, String> {
    let t = text.trim().trim_end_matches('/');
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or_else(|| "expected an http:// or https:// URL".to_owned())?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(t.to_owned())
}

pub(crate) fn parse_database_url(text: &str) -> Result<String, String> {
    text.parse::<tokio_postgres::Config>()
        .map(|_| text.to_owned())
        .map_err(|e| format!("not a PostgreSQL connection string ({e})"))
}

pub(crate) fn parse_log_level(text: &str) -> Result<String, String> {
    match text {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(text.to_owned()),
        _ => Err("expected error, warn, info, debug, trace or off".into()),
    }
}

pub(crate) fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_file_and_line() {
        let e = Config::from_toml("b.toml", "[server]\nlisten = \"0.0.0.0:1\"\nlisen = 2\n")
            .unwrap_err();
        assert_eq!(e.origin, "b.toml");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("unknown field `lisen`"), "{e}");
    }

    #[test]
    fn values_are_checked_with_their_line() {
        let e = Config::from_toml("b.toml", "[database]\n\npool_size = 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.toml:3: database.pool_size = 0: must be between 1 and 1000"
        );
        let e = Config::from_toml("b.toml", "[gateway]\nurl = \"ftp://x\"\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        let e = Config::from_toml("b.toml", "[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(e.message.contains("expected text or json"), "{e}");
    }

    #[test]
    fn file_values_apply() {
        let c = Config::from_toml(
            "b.toml",
            "[server]\nlisten = \"127.0.0.1:9000\"\n[retention]\ndays = 7\n[usage]\nhard_token_limit = 5\n\
             [auth]\nrole_claim = \"\"\nadmin_roles = [\"owner\"]\n",
        )
        .expect("valid");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.retention_days, 7);
        assert_eq!(c.hard_token_limit, Some(5));
        assert_eq!(c.soft_token_limit, None);
        assert_eq!(c.auth.jwt.role_claim, None);
        assert_eq!(c.auth.admin_roles, vec!["owner"]);
        assert_eq!(c.auth.operator_roles, vec!["operator"], "the default");
    }

    #[test]
    fn operator_roles_are_read_and_checked() {
        let c = Config::from_toml("b.toml", "[auth]\noperator_roles = [\"sre\", \"ops\"]\n")
            .expect("valid");
        assert_eq!(c.auth.operator_roles, vec!["sre", "ops"]);
        let c = Config::from_toml("b.toml", "[auth]\noperator_roles = []\n").expect("none");
        assert!(c.auth.operator_roles.is_empty());
        let e = Config::from_toml("b.toml", "[auth]\n\noperator_roles = [\" ops\"]\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.starts_with("auth.operator_roles:"), "{e}");
    }

    #[test]
    fn missing_database_url_names_the_variable() {
        let e = Config::default().database_url().unwrap_err();
        assert!(e.to_string().contains("DATABASE_URL is not set"), "{e}");
    }
}
