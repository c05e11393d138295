//! The gateway config file as written: serde structs that mirror `conf/gateway.toml`.
//!
//! Unknown keys are refused (`deny_unknown_fields`) so a typo never silently falls back to a
//! default. Values that need checking are `Spanned` so their errors can name the line.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub pool: PoolSection,
    #[serde(default)]
    pub backend: BackendSection,
    #[serde(default)]
    pub cors: CorsSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub policies: PoliciesSection,
    #[serde(default)]
    pub redis: RedisSection,
    #[serde(default)]
    pub console: super::console::ConsoleSection,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesSection {
    pub dir: Option<String>,
    pub watch_interval_ms: Option<Spanned<i64>>,
    pub max_file_bytes: Option<Spanned<i64>>,
    pub read_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    pub url: Option<Spanned<String>>,
    pub key_prefix: Option<Spanned<String>>,
    pub timeout_ms: Option<Spanned<i64>>,
    pub failure_mode: Option<Spanned<String>>,
    pub stream_lease_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    pub origins: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_credentials: Option<Spanned<bool>>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub max_age_s: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub hsts: Option<String>,
    pub redirect_http: Option<bool>,
    pub watch_interval_ms: Option<Spanned<i64>>,
    #[serde(default)]
    pub certificates: Vec<SniCertSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertSection {
    pub server_names: Spanned<Vec<String>>,
    pub cert_file: Spanned<String>,
    pub key_file: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub secret: Option<String>,
    pub public_key_file: Option<Spanned<String>>,
    pub jwks_url: Option<Spanned<String>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_s: Option<Spanned<i64>>,
    pub org_claim: Option<String>,
    pub user_claim: Option<String>,
    pub role_claim: Option<String>,
    pub jwks_refresh_s: Option<Spanned<i64>>,
    pub jwks_min_refetch_s: Option<Spanned<i64>>,
    pub key_cache_s: Option<Spanned<i64>>,
    pub key_stale_s: Option<Spanned<i64>>,
    pub max_failures_per_minute: Option<Spanned<i64>>,
    pub public_paths: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Spanned<String>>,
    pub threads: Option<Spanned<i64>>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub max_header_bytes: Option<Spanned<i64>>,
    pub header_timeout_ms: Option<Spanned<i64>>,
    pub grace_period_s: Option<Spanned<i64>>,
    pub shutdown_timeout_s: Option<Spanned<i64>>,
    pub pid_file: Option<Spanned<String>>,
    pub upgrade_sock: Option<Spanned<String>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub level: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    pub instances: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_inflight_per_instance: Option<Spanned<i64>>,
    pub queue_size: Option<Spanned<i64>>,
    pub queue_timeout_ms: Option<Spanned<i64>>,
    pub connect_timeout_ms: Option<Spanned<i64>>,
    pub read_timeout_s: Option<Spanned<i64>>,
    pub retries: Option<Spanned<i64>>,
    pub health_interval_ms: Option<Spanned<i64>>,
    pub health_timeout_ms: Option<Spanned<i64>>,
    pub eject_after_5xx: Option<Spanned<i64>>,
    pub balance: Option<Spanned<String>>,
    pub affinity_load_factor: Option<Spanned<f64>>,
    pub affinity_entries: Option<Spanned<i64>>,
    pub affinity_queue_window: Option<Spanned<i64>>,
    pub model_load_estimate_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    pub url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub host: Option<Spanned<String>>,
    pub prefix: Spanned<String>,
    pub target: Spanned<String>,
    pub plugins: Option<Spanned<Vec<Spanned<String>>>>,
    pub websocket: Option<bool>,
    pub forward_authorization: Option<bool>,
}
