//! Configuration: the file (`file.rs`), then environment overrides (`env.rs`), validated once
//! into [`Config`], the only form the rest of the gateway sees.

pub mod console;
pub mod cors;
mod edge;
mod env;
mod error;
mod file;
mod values;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use console::ConsoleConfig;
pub use cors::{CorsConfig, OriginRule};
pub use edge::{AuthConfig, CertFiles, Cidr, TlsConfig};
pub use error::ConfigError;
pub use values::{LogFormat, UpstreamUrl};

use error::line_of;
use file::{FileConfig, RouteSection};
use toml::Spanned;

/// Where a route sends what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The Ollama pool, with model-aware selection.
    Ollama,
    /// The conversations backend.
    Backend,
}

/// A validated route: host (optional) and path prefix select a target and its plugin chain.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub host: Option<String>,
    pub prefix: String,
    pub target: Target,
    pub plugins: Vec<String>,
    /// WebSocket upgrades pass through (refused otherwise).
    pub websocket: bool,
    /// The client's `Authorization` goes upstream (the backend may verify it again).
    pub forward_authorization: bool,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub instances: Vec<UpstreamUrl>,
    pub max_inflight_per_instance: usize,
    pub queue_size: usize,
    pub queue_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retries: usize,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub eject_after_5xx: u32,
    pub balance: Balance,
    /// `c` of consistent hashing with bounded loads: a prefix's owner takes a request unless
    /// its in-flight count would pass `ceil(c × mean + 1)`.
    pub affinity_load_factor: f64,
    /// Prompt blocks remembered by the prefix index.
    pub affinity_entries: usize,
    /// How many tickets (requests of a weight-1 org) a queued request may jump, and how often
    /// one may be jumped, so that a freed slot goes to a waiter whose prompt it holds, or
    /// whose model is loaded there when the fair choice's is not (any distance when the fair
    /// choice's model is loaded on another instance; see `pool::fair`; `cache_aware` only); 0
    /// hands slots strictly in fair order.
    pub affinity_queue_window: u32,
    /// What loading a model is assumed to cost before its first token, until cold requests
    /// teach the pool better (see `pool::estimates`): a request does not go where its model
    /// must load while a slot where it is loaded should free sooner than this.
    pub model_load_estimate: Duration,
}

/// The load estimate before anything is learned: 3 s, the GPU simulator's `LOAD_MS`. A 7-8B
/// model (4.9 GB at Q4_K_M) reaches an NVIDIA GPU from a warm page cache in 3-4 s: llama.cpp
/// logs `load time = 3420 ms` for a 7B F16 (ggml-org/llama.cpp#3479) and under 3 s to 4.2 s
/// for an 8B Q8 (#8323); Ollama adds starting its runner process. Too low an estimate only
/// loads a model where a short wait would have done; the first cold requests correct it.
pub const MODEL_LOAD_ESTIMATE: Duration = Duration::from_secs(3);

/// How the pool picks an instance among those that can serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// The instance holding the request's longest prompt prefix, within a load bound.
    CacheAware,
    /// Model loaded first, then least in flight.
    LeastBusy,
    RoundRobin,
}

impl Balance {
    pub fn as_str(&self) -> &'static str {
        match self {
            Balance::CacheAware => "cache_aware",
            Balance::LeastBusy => "least_busy",
            Balance::RoundRobin => "round_robin",
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub source: String,
    pub listen: SocketAddr,
    pub threads: usize,
    pub max_body_bytes: usize,
    /// A larger request header block (request line and headers) gets 431.
    pub max_header_bytes: usize,
    /// Longest time a new connection may take to send its first request's headers.
    pub header_timeout: Duration,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub log_level: String,
    pub log_format: LogFormat,
    pub metrics_enabled: bool,
    pub pool: PoolConfig,
    pub backend: Option<UpstreamUrl>,
    pub routes: Vec<RouteConfig>,
    pub cors: CorsConfig,
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    pub policies: PoliciesConfig,
    pub redis: RedisConfig,
    pub quota: QuotaConfig,
    pub console: ConsoleConfig,
}

#[derive(Debug, Clone)]
pub struct QuotaConfig {
    /// `DATABASE_URL`: where the usage ledger (`usage_events`) lives; none = no ledger.
    pub database_url: Option<String>,
    /// Completion cap reserved for a request that gives none, when a hard limit applies.
    pub default_completion_tokens: u64,
    /// Usage events held while PostgreSQL is away.
    pub ledger_buffer: usize,
}

#[derive(Debug, Clone)]
pub struct PoliciesConfig {
    pub dir: std::path::PathBuf,
    pub watch_interval: Duration,
    /// A policy file larger than this is refused (a link to `/dev/zero` must not eat memory).
    pub max_file_bytes: u64,
    /// A reload that takes longer (a hung filesystem) is reported and the watcher marked stalled.
    pub read_timeout: Duration,
    /// `ORG_SOFT_TOKEN_LIMIT` / `ORG_HARD_TOKEN_LIMIT`: the defaults' quota.
    pub soft_tokens: Option<u64>,
    pub hard_tokens: Option<u64>,
}

/// What to do when Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Fall back to the local limiter (and report degraded readiness).
    Open,
    /// Refuse with 503.
    Closed,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Option<String>,
    /// Prefix of every key the gateway writes (so several deployments or tests can share a
    /// Redis).
    pub key_prefix: String,
    pub timeout: Duration,
    pub failure_mode: FailureMode,
    /// How long a stream slot held in Redis outlives its gateway (renewed while it runs).
    pub stream_lease: Duration,
}

/// Plugins every route runs unless it lists its own chain.
pub const DEFAULT_PLUGINS: &[&str] = &[
    "request_id",
    "cors",
    "auth",
    "rate_limit",
    "body_limit",
    "model_guard",
    "model_body",
    "model_access",
    "quota",
];

impl Default for Config {
    fn default() -> Self {
        Self {
            source: "defaults".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            threads: 2,
            max_body_bytes: 32 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            grace_period: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            pid_file: "/tmp/corral-gateway.pid".into(),
            upgrade_sock: "/tmp/corral-gateway-upgrade.sock".into(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            metrics_enabled: true,
            pool: PoolConfig {
                instances: Vec::new(),
                max_inflight_per_instance: 4,
                queue_size: 256,
                queue_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(300),
                retries: 2,
                health_interval: Duration::from_secs(5),
                health_timeout: Duration::from_secs(2),
                eject_after_5xx: 3,
                balance: Balance::CacheAware,
                affinity_load_factor: 1.25,
                affinity_entries: 200_000,
                affinity_queue_window: 8,
                model_load_estimate: MODEL_LOAD_ESTIMATE,
            },
            backend: None,
            routes: default_routes(),
            cors: CorsConfig::default(),
            tls: None,
            auth: AuthConfig::default(),
            trusted_proxies: Vec::new(),
            policies: PoliciesConfig {
                dir: "policies".into(),
                watch_interval: Duration::from_millis(500),
                max_file_bytes: 4 * 1024 * 1024,
                read_timeout: Duration::from_secs(5),
                soft_tokens: None,
                hard_tokens: None,
            },
            quota: QuotaConfig {
                database_url: None,
                default_completion_tokens: 2048,
                ledger_buffer: 100_000,
            },
            redis: RedisConfig {
                url: None,
                key_prefix: "corral:".into(),
                timeout: Duration::from_millis(250),
                failure_mode: FailureMode::Open,
                stream_lease: Duration::from_secs(30),
            },
            console: ConsoleConfig::default(),
        }
    }
}

/// The routes a gateway serves when the file lists none: the backend's paths, then every
/// Ollama API path.
pub fn default_routes() -> Vec<RouteConfig> {
    let route = |prefix: &str, target| RouteConfig {
        host: None,
        prefix: prefix.into(),
        target,
        plugins: DEFAULT_PLUGINS.iter().map(|p| p.to_string()).collect(),
        websocket: false,
        forward_authorization: target == Target::Backend,
    };
    vec![
        route("/api/conversations", Target::Backend),
        route("/api/orgs", Target::Backend),
        route("/api/", Target::Ollama),
        route("/v1/", Target::Ollama),
    ]
}

impl Config {
    /// Reads `path`, validates it, then applies the environment. A missing file is an error:
    /// an operator who names a file expects it to be used.
    pub fn load(path: &Path, known_plugins: &[&str]) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::in_file(&name, None, format!("cannot read: {e}")))?;
        let mut config = Self::from_toml(&name, &text, known_plugins)?;
        env::apply(&mut config, &|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Validates TOML text (without the environment).
    pub fn from_toml(
        name: &str,
        text: &str,
        known_plugins: &[&str],
    ) -> Result<Config, ConfigError> {
        let raw: FileConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            ConfigError::in_file(name, line_of(text, e.span()), msg)
        })?;
        Validator { name, text }.build(raw, known_plugins)
    }
}

/// Turns the raw file into [`Config`], naming file, line, key and value on every error.
struct Validator<'a> {
    name: &'a str,
    text: &'a str,
}

impl Validator<'_> {
    fn err<T>(&self, spanned: &Spanned<T>, key: &str, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError::in_file(
            self.name,
            line_of(self.text, Some(spanned.span())),
            format!("{key}: {msg}"),
        )
    }

    fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<u64>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        values::in_range(*v.get_ref(), min, max)
            .map(Some)
            .map_err(|m| self.err(v, key, m))
    }

    fn build(&self, raw: FileConfig, known_plugins: &[&str]) -> Result<Config, ConfigError> {
        let mut c = Config {
            source: self.name.to_string(),
            ..Config::default()
        };
        self.server(&raw, &mut c)?;
        self.log(&raw, &mut c)?;
        c.metrics_enabled = raw.metrics.enabled.unwrap_or(true);
        self.cors(&raw, &mut c)?;
        self.tls(&raw, &mut c)?;
        self.auth(&raw, &mut c)?;
        self.trusted_proxies(&raw, &mut c)?;
        self.policies_and_redis(&raw, &mut c)?;
        self.pool(&raw, &mut c)?;
        c.console = ConsoleConfig::from_section(&raw.console, self.name, self.text)?;
        if let Some(url) = &raw.backend.url {
            let parsed = values::parse_upstream_url(url.get_ref())
                .map_err(|m| self.err(url, "backend.url", format!("\"{}\": {m}", url.get_ref())))?;
            c.backend = Some(parsed);
        }
        if !raw.routes.is_empty() {
            c.routes = raw
                .routes
                .iter()
                .map(|r| self.route(r, known_plugins))
                .collect::<Result<_, _>>()?;
        }
        Ok(c)
    }

    fn server(&self, raw: &FileConfig, c: &mut Config) -> Result<(), ConfigError> {
        let s = &raw.server;
        if let Some(listen) = &s.listen {
            c.listen = values::parse_listen(listen.get_ref()).map_err(|m| {
                self.err(
                    listen,
                    "server.listen",
                    format!("\"{}\": {m}", listen.get_ref()),
                )
            })?;
        }
        if let Some(n) = self.int(&s.threads, "server.threads", 1, 1024)? {
            c.threads = n as usize;
        }
        if let Some(n) = self.int(&s.max_body_bytes, "server.max_body_bytes", 1024, 1 << 32)? {
            c.max_body_bytes = n as usize;
        }
        // Pingora itself reads at most 1 MiB of headers: a larger limit would never apply.
        if let Some(n) = self.int(
            &s.max_header_bytes,
            "server.max_header_bytes",
            1024,
            1 << 20,
        )? {
            c.max_header_bytes = n as usize;
        }
        if let Some(n) = self.int(
            &s.header_timeout_ms,
            "server.header_timeout_ms",
            100,
            600_000,
        )? {
            c.header_timeout = Duration::from_millis(n);
        }
        if let Some(n) = self.int(&s.grace_period_s, "server.grace_period_s", 0, 86_400)? {
            c.grace_period = Duration::from_secs(n);
        }
        if let Some(n) = self.int(&s.shutdown_timeout_s, "server.shutdown_timeout_s", 0, 3_600)? {
            c.shutdown_timeout = Duration::from_secs(n);
        }
        if let Some(p) = &s.pid_file {
            c.pid_file = p.get_ref().clone();
        }
        if let Some(p) = &s.upgrade_sock {
            c.upgrade_sock = p.get_ref().clone();
        }
        Ok(())
    }

    fn log(&self, raw: &FileConfig, c: &mut Config) -> Result<(), ConfigError> {
        if let Some(level) = &raw.log.level {
            c.log_level = values::parse_log_level(level.get_ref()).map_err(|m| {
                self.err(level, "log.level", format!("\"{}\": {m}", level.get_ref()))
            })?;
        }
        if let Some(format) = &raw.log.format {
            c.log_format = values::parse_log_format(format.get_ref()).map_err(|m| {
                self.err(
                    format,
                    "log.format",
                    format!("\"{}\": {m}", format.get_ref()),
                )
            })?;
        }
        Ok(())
    }

    fn pool(&self, raw: &FileConfig, c: &mut Config) -> Result<(), ConfigError> {
        let p = &raw.pool;
        if let Some(list) = &p.instances {
            let mut instances = Vec::new();
            for url in list.get_ref() {
                let parsed = values::parse_upstream_url(url.get_ref()).map_err(|m| {
                    self.err(url, "pool.instances", format!("\"{}\": {m}", url.get_ref()))
                })?;
                if instances
                    .iter()
                    .any(|i: &UpstreamUrl| i.base == parsed.base)
                {
                    return Err(self.err(
                        url,
                        "pool.instances",
                        format!("\"{}\" is listed twice", url.get_ref()),
                    ));
                }
                instances.push(parsed);
            }
            c.pool.instances = instances;
        }
        let pc = &mut c.pool;
        if let Some(n) = self.int(
            &p.max_inflight_per_instance,
            "pool.max_inflight_per_instance",
            1,
            100_000,
        )? {
            pc.max_inflight_per_instance = n as usize;
        }
        if let Some(n) = self.int(&p.queue_size, "pool.queue_size", 0, 1_000_000)? {
            pc.queue_size = n as usize;
        }
        if let Some(n) = self.int(&p.queue_timeout_ms, "pool.queue_timeout_ms", 0, 3_600_000)? {
            pc.queue_timeout = Duration::from_millis(n);
        }
        if let Some(n) = self.int(&p.connect_timeout_ms, "pool.connect_timeout_ms", 1, 600_000)? {
            pc.connect_timeout = Duration::from_millis(n);
        }
        if let Some(n) = self.int(&p.read_timeout_s, "pool.read_timeout_s", 1, 86_400)? {
            pc.read_timeout = Duration::from_secs(n);
        }
        if let Some(n) = self.int(&p.retries, "pool.retries", 0, 16)? {
            pc.retries = n as usize;
        }
        if let Some(n) = self.int(
            &p.health_interval_ms,
            "pool.health_interval_ms",
            50,
            3_600_000,
        )? {
            pc.health_interval = Duration::from_millis(n);
        }
        if let Some(n) = self.int(&p.health_timeout_ms, "pool.health_timeout_ms", 10, 600_000)? {
            pc.health_timeout = Duration::from_millis(n);
        }
        if let Some(n) = self.int(&p.eject_after_5xx, "pool.eject_after_5xx", 1, 1_000)? {
            pc.eject_after_5xx = n as u32;
        }
        if let Some(b) = &p.balance {
            pc.balance = values::parse_balance(b.get_ref())
                .map_err(|m| self.err(b, "pool.balance", format!("\"{}\": {m}", b.get_ref())))?;
        }
        if let Some(c) = &p.affinity_load_factor {
            let v = *c.get_ref();
            if !(1.0..=10.0).contains(&v) {
                let m = format!("{v}: expected a number from 1.0 to 10.0");
                return Err(self.err(c, "pool.affinity_load_factor", m));
            }
            pc.affinity_load_factor = v;
        }
        if let Some(n) = self.int(&p.affinity_entries, "pool.affinity_entries", 1, 100_000_000)? {
            pc.affinity_entries = n as usize;
        }
        if let Some(n) = self.int(
            &p.affinity_queue_window,
            "pool.affinity_queue_window",
            0,
            1_000,
        )? {
            pc.affinity_queue_window = n as u32;
        }
        if let Some(n) = self.int(
            &p.model_load_estimate_ms,
            "pool.model_load_estimate_ms",
            1,
            600_000,
        )? {
            pc.model_load_estimate = Duration::from_millis(n);
        }
        Ok(())
    }

    fn route(&self, r: &RouteSection, known_plugins: &[&str]) -> Result<RouteConfig, ConfigError> {
        let prefix = r.prefix.get_ref();
        if !prefix.starts_with('/') {
            return Err(self.err(
                &r.prefix,
                "routes.prefix",
                format!("\"{prefix}\" must start with /"),
            ));
        }
        let target = match r.target.get_ref().as_str() {
            "ollama" => Target::Ollama,
            "backend" => Target::Backend,
            other => {
                return Err(self.err(
                    &r.target,
                    "routes.target",
                    format!("\"{other}\": expected \"ollama\" or \"backend\""),
                ))
            }
        };
        let plugins = match &r.plugins {
            None => DEFAULT_PLUGINS.iter().map(|p| p.to_string()).collect(),
            Some(list) => {
                let mut names = Vec::new();
                for p in list.get_ref() {
                    if !known_plugins.contains(&p.get_ref().as_str()) {
                        return Err(self.err(
                            p,
                            "routes.plugins",
                            format!(
                                "unknown plugin \"{}\" (known: {})",
                                p.get_ref(),
                                known_plugins.join(", ")
                            ),
                        ));
                    }
                    names.push(p.get_ref().clone());
                }
                names
            }
        };
        Ok(RouteConfig {
            host: r.host.as_ref().map(|h| h.get_ref().to_ascii_lowercase()),
            prefix: prefix.clone(),
            target,
            plugins,
            websocket: r.websocket.unwrap_or(false),
            forward_authorization: r.forward_authorization.unwrap_or(target == Target::Backend),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUGINS: &[&str] = crate::plugins::KNOWN;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml("gw.toml", text, PLUGINS)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("").expect("valid");
        assert_eq!(c.pool.max_inflight_per_instance, 4);
        assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
        assert_eq!(c.routes.len(), 4);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = load("[server]\nlisten = \"0.0.0.0:1\"\nlisten_typo = 3\n").expect_err("invalid");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("listen_typo"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let e = load("[pool]\ninstances = [\"http://a:1\", \"ftp://b\"]\n").expect_err("invalid");
        assert_eq!(e.line, Some(2));
        assert!(
            e.message.contains("pool.instances") && e.message.contains("ftp://b"),
            "{e}"
        );
        let e = load("[pool]\n\nmax_inflight_per_instance = 0\n").expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "gw.toml:3: pool.max_inflight_per_instance: 0 is out of range: expected 1 to 100000"
        );
        let e = load("[server]\nlisten = \"nowhere\"\n").expect_err("invalid");
        assert!(
            e.to_string()
                .starts_with("gw.toml:2: server.listen: \"nowhere\""),
            "{e}"
        );
        let e = load("[[routes]]\nprefix = \"/x\"\ntarget = \"ollama\"\nplugins = [\"nope\"]\n")
            .expect_err("invalid");
        assert!(e.to_string().contains("unknown plugin \"nope\""), "{e}");
    }

    #[test]
    fn model_load_estimate_defaults_and_is_checked() {
        let c = load("").expect("valid");
        assert_eq!(c.pool.model_load_estimate, MODEL_LOAD_ESTIMATE);
        let c = load("[pool]\nmodel_load_estimate_ms = 8000\n").expect("valid");
        assert_eq!(c.pool.model_load_estimate, Duration::from_secs(8));
        let e = load("[pool]\n\nmodel_load_estimate_ms = 0\n").expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "gw.toml:3: pool.model_load_estimate_ms: 0 is out of range: expected 1 to 600000"
        );
    }

    #[test]
    fn affinity_queue_window_defaults_and_is_checked() {
        assert_eq!(load("").expect("valid").pool.affinity_queue_window, 8);
        let c = load("[pool]\naffinity_queue_window = 0\n").expect("valid");
        assert_eq!(c.pool.affinity_queue_window, 0);
        let e = load("[pool]\naffinity_queue_window = -1\n").expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "gw.toml:2: pool.affinity_queue_window: -1 is out of range: expected 0 to 1000"
        );
    }

    #[test]
    fn wrong_type_is_refused() {
        let e = load("[pool]\nretries = \"two\"\n").expect_err("invalid");
        assert_eq!(e.line, Some(2));
    }
}
