//! Policy files as written: serde structs mirroring `policies/*.toml`. Unknown keys are
//! refused; values that need checking keep their spans so errors name the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub defaults: Option<LimitsSection>,
    /// Limits for callers without a token (keyed by client IP).
    pub anonymous: Option<AnonymousSection>,
    #[serde(default)]
    pub orgs: BTreeMap<String, OrgSection>,
}

/// The limits an org (or the defaults) sets. Every key optional: unset means inherited.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub requests_per_minute: Option<Spanned<i64>>,
    pub burst: Option<Spanned<i64>>,
    pub user_requests_per_minute: Option<Spanned<i64>>,
    pub tokens_per_minute: Option<Spanned<i64>>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
    pub models: Option<Spanned<Vec<Spanned<String>>>>,
    pub weight: Option<Spanned<i64>>,
    pub admin_roles: Option<Vec<String>>,
    pub quota: Option<QuotaSection>,
}

/// An org: the same keys as `[defaults]`, plus its users. (Written out rather than
/// `#[serde(flatten)]`, which cannot be combined with `deny_unknown_fields`.)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSection {
    pub requests_per_minute: Option<Spanned<i64>>,
    pub burst: Option<Spanned<i64>>,
    pub user_requests_per_minute: Option<Spanned<i64>>,
    pub tokens_per_minute: Option<Spanned<i64>>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
    pub models: Option<Spanned<Vec<Spanned<String>>>>,
    pub weight: Option<Spanned<i64>>,
    pub admin_roles: Option<Vec<String>>,
    pub quota: Option<QuotaSection>,
    #[serde(default)]
    pub users: BTreeMap<String, UserSection>,
    /// Limits for requests made with one of the org's API keys, by the key's name (the same
    /// fields as a user's).
    #[serde(default)]
    pub keys: BTreeMap<String, UserSection>,
}

impl OrgSection {
    /// The org's limit keys, in the shape `[defaults]` uses.
    pub fn limits(&self) -> LimitsRef<'_> {
        LimitsRef {
            requests_per_minute: &self.requests_per_minute,
            burst: &self.burst,
            user_requests_per_minute: &self.user_requests_per_minute,
            tokens_per_minute: &self.tokens_per_minute,
            max_concurrent_streams: &self.max_concurrent_streams,
            models: &self.models,
            weight: &self.weight,
            admin_roles: &self.admin_roles,
            quota: &self.quota,
        }
    }
}

impl LimitsSection {
    pub fn limits(&self) -> LimitsRef<'_> {
        LimitsRef {
            requests_per_minute: &self.requests_per_minute,
            burst: &self.burst,
            user_requests_per_minute: &self.user_requests_per_minute,
            tokens_per_minute: &self.tokens_per_minute,
            max_concurrent_streams: &self.max_concurrent_streams,
            models: &self.models,
            weight: &self.weight,
            admin_roles: &self.admin_roles,
            quota: &self.quota,
        }
    }
}

/// A borrowed view of limit keys, shared by `[defaults]` and `[orgs.*]` validation.
pub struct LimitsRef<'a> {
    pub requests_per_minute: &'a Option<Spanned<i64>>,
    pub burst: &'a Option<Spanned<i64>>,
    pub user_requests_per_minute: &'a Option<Spanned<i64>>,
    pub tokens_per_minute: &'a Option<Spanned<i64>>,
    pub max_concurrent_streams: &'a Option<Spanned<i64>>,
    pub models: &'a Option<Spanned<Vec<Spanned<String>>>>,
    pub weight: &'a Option<Spanned<i64>>,
    pub admin_roles: &'a Option<Vec<String>>,
    pub quota: &'a Option<QuotaSection>,
}

/// What one user inside an org may have differently from the org.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    pub user_requests_per_minute: Option<Spanned<i64>>,
    pub tokens_per_minute: Option<Spanned<i64>>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
    pub models: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSection {
    pub period: Option<Spanned<String>>,
    pub soft_tokens: Option<Spanned<i64>>,
    pub hard_tokens: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousSection {
    pub requests_per_minute: Option<Spanned<i64>>,
    pub burst: Option<Spanned<i64>>,
}
