//! The backend config file as written: serde structs that mirror `conf/backend.toml`.
//!
//! Unknown keys are refused (`deny_unknown_fields`) so a typo never silently falls back to a
//! default; values that need checking are `Spanned` so their errors can name the line.

use serde::Deserialize;
use toml::Spanned;

type Int = Option<Spanned<i64>>;
type Text = Option<Spanned<String>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub chat: ChatSection,
    #[serde(default)]
    pub usage: UsageSection,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Text,
    pub grace_period_s: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub url: Text,
    pub pool_size: Int,
    pub min_idle: Int,
    pub connect_timeout_ms: Int,
    pub acquire_timeout_ms: Int,
    pub statement_timeout_ms: Int,
    pub migrations_dir: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub url: Text,
    pub connect_timeout_ms: Int,
    pub read_timeout_s: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub secret: Option<String>,
    pub public_key_file: Text,
    pub jwks_url: Text,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_s: Int,
    pub org_claim: Option<String>,
    pub user_claim: Option<String>,
    pub role_claim: Option<String>,
    pub admin_roles: Option<Vec<String>>,
    pub operator_roles: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSection {
    pub max_title_chars: Int,
    pub max_message_bytes: Int,
    pub history_messages: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageSection {
    pub soft_token_limit: Int,
    pub hard_token_limit: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    pub days: Int,
    pub interval_s: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub level: Text,
    pub format: Text,
}
