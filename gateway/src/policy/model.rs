//! The validated policy: what every org and user may do, resolved once per reload so a
//! request only looks things up.

use std::collections::HashMap;
use std::time::SystemTime;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Quota periods: calendar month or day, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Month,
    Day,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub period: Period,
    /// Warn past this many tokens in the period; 0 = no warning.
    pub soft_tokens: u64,
    /// Refuse past this; 0 = unlimited.
    pub hard_tokens: u64,
}

/// Glob patterns of model names (`llama3.*`, `qwen2.5:*`).
#[derive(Debug, Clone)]
pub struct ModelRules {
    /// Shared: every request's effective policy holds one, so cloning must be cheap.
    set: std::sync::Arc<GlobSet>,
    /// A second set a model must match too: an API key's own patterns, narrower than its
    /// org's.
    also: Option<std::sync::Arc<GlobSet>>,
    /// The patterns as written, for the console's policy view.
    patterns: std::sync::Arc<[String]>,
}

impl ModelRules {
    pub fn new(patterns: Vec<String>) -> Result<ModelRules, String> {
        let mut b = GlobSetBuilder::new();
        for p in &patterns {
            let glob = Glob::new(p).map_err(|e| format!("model pattern \"{p}\": {e}"))?;
            b.add(glob);
        }
        let set = b.build().map_err(|e| e.to_string())?;
        Ok(ModelRules {
            set: std::sync::Arc::new(set),
            also: None,
            patterns: patterns.into(),
        })
    }

    /// Rules that allow nothing.
    pub fn none() -> ModelRules {
        ModelRules {
            set: std::sync::Arc::new(GlobSet::empty()),
            also: None,
            patterns: std::sync::Arc::new([]),
        }
    }

    /// These rules, further limited to what `narrower` allows.
    pub fn narrowed_by(&self, narrower: &ModelRules) -> ModelRules {
        ModelRules {
            set: std::sync::Arc::clone(&self.set),
            also: Some(std::sync::Arc::clone(&narrower.set)),
            patterns: std::sync::Arc::clone(&self.patterns),
        }
    }

    /// The patterns as written (`["*"]` allows any model).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn any() -> ModelRules {
        Self::new(vec!["*".into()]).unwrap_or_else(|_| Self::none())
    }

    /// A model is allowed when its name, or the name with `:latest` left off, matches (both
    /// sets, when narrowed).
    pub fn allows(&self, model: &str) -> bool {
        let matches = |set: &GlobSet| {
            set.is_match(model)
                || model
                    .strip_suffix(":latest")
                    .is_some_and(|bare| set.is_match(bare))
        };
        matches(&self.set) && self.also.as_deref().is_none_or(matches)
    }
}

/// One org's limits (or the defaults). Rates of 0 mean unlimited.
#[derive(Debug, Clone)]
pub struct Limits {
    pub requests_per_minute: u64,
    pub burst: u64,
    pub user_requests_per_minute: u64,
    pub tokens_per_minute: u64,
    pub max_concurrent_streams: u64,
    pub models: ModelRules,
    pub weight: u64,
    pub admin_roles: Vec<String>,
    pub quota: Quota,
}

impl Default for Limits {
    /// The built-in defaults when no `[defaults]` is written: DESIGN.md's example values,
    /// and no quota.
    fn default() -> Self {
        Limits {
            requests_per_minute: 600,
            burst: 60,
            user_requests_per_minute: 120,
            tokens_per_minute: 0,
            max_concurrent_streams: 16,
            models: ModelRules::any(),
            weight: 1,
            admin_roles: vec!["admin".into()],
            quota: Quota {
                period: Period::Month,
                soft_tokens: 0,
                hard_tokens: 0,
            },
        }
    }
}

/// What a user may have differently from their org.
#[derive(Debug, Clone, Default)]
pub struct UserOverride {
    pub user_requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent_streams: Option<u64>,
    pub models: Option<ModelRules>,
}

#[derive(Debug, Clone)]
pub struct OrgPolicy {
    pub limits: Limits,
    pub users: HashMap<String, UserOverride>,
    /// Overrides for requests made with one of the org's API keys, by key name.
    pub keys: HashMap<String, UserOverride>,
}

/// Limits for callers without a token, per client IP.
#[derive(Debug, Clone, Default)]
pub struct AnonymousLimits {
    pub requests_per_minute: u64,
    pub burst: u64,
}

/// The limits that apply to one request's caller.
#[derive(Debug, Clone)]
pub struct Effective {
    pub org: Limits,
    pub user_requests_per_minute: u64,
    pub user_tokens_per_minute: u64,
    pub user_max_concurrent_streams: u64,
    pub models: ModelRules,
}

/// Every policy file, merged and validated: one immutable snapshot, swapped on reload.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub defaults: Limits,
    pub anonymous: AnonymousLimits,
    pub orgs: HashMap<String, OrgPolicy>,
    pub files: Vec<String>,
    pub loaded_at: SystemTime,
}

impl Default for PolicySet {
    fn default() -> Self {
        PolicySet {
            defaults: Limits::default(),
            anonymous: AnonymousLimits::default(),
            orgs: HashMap::new(),
            files: Vec::new(),
            loaded_at: SystemTime::now(),
        }
    }
}

impl PolicySet {
    /// The org's limits; an org no file names gets the defaults.
    pub fn org(&self, org: &str) -> &Limits {
        self.orgs.get(org).map_or(&self.defaults, |o| &o.limits)
    }

    /// The caller's limits: the org's, with the user's overrides, or the key's when the
    /// request came with an API key that has its own section.
    pub fn effective(&self, org: &str, user: &str, key: Option<&str>) -> Effective {
        let limits = self.org(org).clone();
        let policy = self.orgs.get(org);
        let key_override = key.and_then(|k| policy.and_then(|o| o.keys.get(k)));
        let user_override = key_override.or_else(|| policy.and_then(|o| o.users.get(user)));
        let pick = |o: Option<u64>, d: u64| o.unwrap_or(d);
        Effective {
            user_requests_per_minute: pick(
                user_override.and_then(|u| u.user_requests_per_minute),
                limits.user_requests_per_minute,
            ),
            user_tokens_per_minute: pick(user_override.and_then(|u| u.tokens_per_minute), 0),
            user_max_concurrent_streams: pick(
                user_override.and_then(|u| u.max_concurrent_streams),
                0,
            ),
            models: user_override
                .and_then(|u| u.models.clone())
                .unwrap_or_else(|| limits.models.clone()),
            org: limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_globs() {
        let r = ModelRules::new(vec!["llama3.*".into(), "qwen2.5:*".into()]).expect("valid");
        assert!(r.allows("llama3.1:8b"));
        assert!(r.allows("qwen2.5:7b"));
        assert!(!r.allows("mistral:7b"));
        assert!(!r.allows("llama3:8b"), "llama3.* needs the dot");
        let bare = ModelRules::new(vec!["llama3".into()]).expect("valid");
        assert!(bare.allows("llama3:latest"));
        assert!(ModelRules::new(vec!["[".into()]).is_err());
    }
}
