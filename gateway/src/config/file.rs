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
    pub routes: Vec<RouteSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Spanned<String>>,
    pub threads: Option<Spanned<i64>>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub grace_period_s: Option<Spanned<i64>>,
    pub shutdown_timeout_s: Option<Spanned<i64>>,
    pub pid_file: Option<Spanned<String>>,
    pub upgrade_sock: Option<Spanned<String>>,
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
}
