//! Reading `policies/*.toml`: parse every file, validate, merge into one [`PolicySet`].
//! The first error stops the load and names file, line and key; the caller keeps serving
//! the previous set.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use toml::Spanned;

use super::file::{LimitsRef, PolicyFile, QuotaSection, UserSection};
use super::model::{
    AnonymousLimits, Limits, ModelRules, OrgPolicy, Period, PolicySet, Quota, UserOverride,
};
use crate::config::ConfigError;

/// Quota defaults from the environment (`ORG_SOFT_TOKEN_LIMIT`, `ORG_HARD_TOKEN_LIMIT`).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaEnv {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// One parsed file and its text (for line numbers).
struct Source {
    name: String,
    text: String,
    file: PolicyFile,
}

/// Loads every `*.toml` in `dir` (sorted by name). A missing directory is an empty policy.
/// Files that are not regular files, or larger than `max_file_bytes`, are refused.
pub fn load_dir(dir: &Path, env: QuotaEnv, max_file_bytes: u64) -> Result<PolicySet, ConfigError> {
    let mut names: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(ConfigError::in_file(
                &dir.display().to_string(),
                None,
                format!("cannot read: {e}"),
            ))
        }
    };
    names.sort();
    let mut sources = Vec::new();
    for path in names {
        let name = path.display().to_string();
        let text = super::read::read_policy_file(&path, max_file_bytes)
            .map_err(|(line, e)| ConfigError::in_file(&name, line, e))?;
        sources.push(parse(&name, text)?);
    }
    merge(&sources, env)
}

/// Parses one file's text (also used by tests).
fn parse(name: &str, text: String) -> Result<Source, ConfigError> {
    let file: PolicyFile = toml::from_str(&text).map_err(|e| {
        // The parser says nothing for some errors (a key with no value at the end of a file).
        // Some messages span lines; an error is one line (`file:line: message`).
        let message = match e.message().trim() {
            "" => "invalid TOML: a value is missing or incomplete".to_string(),
            m => m.lines().map(str::trim).collect::<Vec<_>>().join("; "),
        };
        ConfigError::in_file(name, line(&text, e.span()), message)
    })?;
    Ok(Source {
        name: name.to_string(),
        text,
        file,
    })
}

fn line(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    let start = span?.start.min(text.len());
    Some(text[..start].bytes().filter(|b| *b == b'\n').count() + 1)
}

/// Validation helpers bound to one source file.
struct Check<'a> {
    src: &'a Source,
}

impl Check<'_> {
    fn err<T>(&self, at: &Spanned<T>, key: &str, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError::in_file(
            &self.src.name,
            line(&self.src.text, Some(at.span())),
            format!("{key}: {msg}"),
        )
    }

    /// An error located by finding where the table `at` is written in the file text.
    fn at_text(&self, at: &str, msg: impl std::fmt::Display) -> ConfigError {
        let line = super::locate::table_line(&self.src.text, at);
        ConfigError::in_file(&self.src.name, line, format!("{at}: {msg}"))
    }

    fn count(&self, v: &Option<Spanned<i64>>, key: &str) -> Result<Option<u64>, ConfigError> {
        match v {
            None => Ok(None),
            Some(n) if *n.get_ref() < 0 => {
                Err(self.err(n, key, format!("{} must not be negative", n.get_ref())))
            }
            Some(n) => Ok(Some(*n.get_ref() as u64)),
        }
    }

    fn models(
        &self,
        v: &Option<Spanned<Vec<Spanned<String>>>>,
        key: &str,
    ) -> Result<Option<ModelRules>, ConfigError> {
        let Some(list) = v else { return Ok(None) };
        for p in list.get_ref() {
            globset::Glob::new(p.get_ref()).map_err(|e| {
                self.err(
                    p,
                    key,
                    format!("\"{}\" is not a valid pattern: {e}", p.get_ref()),
                )
            })?;
        }
        let patterns = list.get_ref().iter().map(|p| p.get_ref().clone()).collect();
        ModelRules::new(patterns)
            .map(Some)
            .map_err(|m| self.err(list, key, m))
    }

    /// `base` with the keys of `section` written over it.
    fn limits(
        &self,
        section: LimitsRef<'_>,
        base: &Limits,
        at: &str,
    ) -> Result<Limits, ConfigError> {
        let k = |key: &str| format!("{at}.{key}");
        let mut l = base.clone();
        if let Some(n) = self.count(section.requests_per_minute, &k("requests_per_minute"))? {
            l.requests_per_minute = n;
        }
        if let Some(n) = self.count(section.burst, &k("burst"))? {
            l.burst = n;
        }
        if let Some(n) = self.count(
            section.user_requests_per_minute,
            &k("user_requests_per_minute"),
        )? {
            l.user_requests_per_minute = n;
        }
        if let Some(n) = self.count(section.tokens_per_minute, &k("tokens_per_minute"))? {
            l.tokens_per_minute = n;
        }
        if let Some(n) = self.count(section.max_concurrent_streams, &k("max_concurrent_streams"))? {
            l.max_concurrent_streams = n;
        }
        if let Some(m) = self.models(section.models, &k("models"))? {
            l.models = m;
        }
        if let Some(w) = section.weight {
            if *w.get_ref() < 1 {
                return Err(self.err(
                    w,
                    &k("weight"),
                    format!("{} must be at least 1", w.get_ref()),
                ));
            }
            l.weight = *w.get_ref() as u64;
        }
        if let Some(roles) = section.admin_roles {
            l.admin_roles = roles.clone();
        }
        if let Some(q) = section.quota {
            l.quota = self.quota(q, &l.quota, &k("quota"))?;
        }
        Ok(l)
    }

    fn quota(&self, q: &QuotaSection, base: &Quota, at: &str) -> Result<Quota, ConfigError> {
        let s = q;
        let mut quota = base.clone();
        if let Some(p) = &s.period {
            quota.period = match p.get_ref().as_str() {
                "month" => Period::Month,
                "day" => Period::Day,
                other => {
                    return Err(self.err(
                        p,
                        &format!("{at}.period"),
                        format!("\"{other}\": expected \"month\" or \"day\""),
                    ))
                }
            };
        }
        if let Some(n) = self.count(&s.soft_tokens, &format!("{at}.soft_tokens"))? {
            quota.soft_tokens = n;
        }
        if let Some(n) = self.count(&s.hard_tokens, &format!("{at}.hard_tokens"))? {
            quota.hard_tokens = n;
        }
        check_soft_hard(&quota).map_err(|m| match (&s.soft_tokens, &s.hard_tokens) {
            (Some(key), _) | (None, Some(key)) => self.err(key, at, m),
            (None, None) => self.at_text(at, m),
        })?;
        Ok(quota)
    }

    fn user(&self, u: &UserSection, at: &str) -> Result<UserOverride, ConfigError> {
        let s = u;
        Ok(UserOverride {
            user_requests_per_minute: self.count(
                &s.user_requests_per_minute,
                &format!("{at}.user_requests_per_minute"),
            )?,
            tokens_per_minute: self
                .count(&s.tokens_per_minute, &format!("{at}.tokens_per_minute"))?,
            max_concurrent_streams: self.count(
                &s.max_concurrent_streams,
                &format!("{at}.max_concurrent_streams"),
            )?,
            models: self.models(&s.models, &format!("{at}.models"))?,
        })
    }
}

fn check_soft_hard(q: &Quota) -> Result<(), String> {
    if q.hard_tokens > 0 && q.soft_tokens > q.hard_tokens {
        return Err(format!(
            "soft_tokens ({}) is above hard_tokens ({})",
            q.soft_tokens, q.hard_tokens
        ));
    }
    Ok(())
}

fn merge(sources: &[Source], env: QuotaEnv) -> Result<PolicySet, ConfigError> {
    let mut defaults = Limits::default();
    if let Some(s) = env.soft {
        defaults.quota.soft_tokens = s;
    }
    if let Some(h) = env.hard {
        defaults.quota.hard_tokens = h;
    }
    check_soft_hard(&defaults.quota).map_err(|m| {
        ConfigError::in_env(
            "ORG_SOFT_TOKEN_LIMIT",
            &defaults.quota.soft_tokens.to_string(),
            m,
        )
    })?;
    let mut defaults_from: Option<&str> = None;
    let mut anonymous_from: Option<&str> = None;
    let mut anonymous = AnonymousLimits::default();
    for src in sources {
        let c = Check { src };
        if let Some(d) = &src.file.defaults {
            if let Some(first) = defaults_from {
                return Err(c.at_text("defaults", format!("[defaults] is already set in {first}")));
            }
            defaults_from = Some(&src.name);
            defaults = c.limits(d.limits(), &defaults, "defaults")?;
        }
        if let Some(a) = &src.file.anonymous {
            if let Some(first) = anonymous_from {
                return Err(c.at_text(
                    "anonymous",
                    format!("[anonymous] is already set in {first}"),
                ));
            }
            anonymous_from = Some(&src.name);
            anonymous = AnonymousLimits {
                requests_per_minute: c
                    .count(&a.requests_per_minute, "anonymous.requests_per_minute")?
                    .unwrap_or(0),
                burst: c.count(&a.burst, "anonymous.burst")?.unwrap_or(0),
            };
        }
    }
    let mut orgs: HashMap<String, OrgPolicy> = HashMap::new();
    let mut org_file: HashMap<String, &str> = HashMap::new();
    for src in sources {
        let c = Check { src };
        for (id, org) in &src.file.orgs {
            let at = format!("orgs.{id}");
            if let Some(first) = org_file.get(id) {
                return Err(c.at_text(&at, format!("org \"{id}\" is already defined in {first}")));
            }
            let limits = c.limits(org.limits(), &defaults, &at)?;
            let mut users = HashMap::new();
            for (uid, u) in &org.users {
                users.insert(uid.clone(), c.user(u, &format!("{at}.users.{uid}"))?);
            }
            let mut keys = HashMap::new();
            for (name, k) in &org.keys {
                keys.insert(name.clone(), c.user(k, &format!("{at}.keys.{name}"))?);
            }
            org_file.insert(id.clone(), &src.name);
            orgs.insert(
                id.clone(),
                OrgPolicy {
                    limits,
                    users,
                    keys,
                },
            );
        }
    }
    Ok(PolicySet {
        defaults,
        anonymous,
        orgs,
        files: sources.iter().map(|s| s.name.clone()).collect(),
        loaded_at: SystemTime::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<PolicySet, ConfigError> {
        let sources = files
            .iter()
            .map(|(n, t)| parse(n, t.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        merge(&sources, QuotaEnv::default())
    }

    const EXAMPLE: &str = r#"
[defaults]
requests_per_minute = 600
burst = 60
models = ["*"]

[defaults.quota]
period = "month"
soft_tokens = 250000
hard_tokens = 500000

[orgs.acme]
requests_per_minute = 1200
models = ["llama3.*", "qwen2.5:*"]
quota = { soft_tokens = 1000000, hard_tokens = 2000000 }

[orgs.acme.users.alice]
user_requests_per_minute = 30
"#;

    #[test]
    fn anonymous_limits_are_set_in_one_file_only() {
        let e = load(&[
            ("a.toml", "[anonymous]\nrequests_per_minute = 5\n"),
            ("b.toml", "# b\n[anonymous]\nburst = 2\n"),
        ])
        .expect_err("twice");
        assert_eq!(
            e.to_string(),
            "b.toml:2: anonymous: [anonymous] is already set in a.toml"
        );
    }

    #[test]
    fn the_design_example_loads() {
        let p = load(&[("a.toml", EXAMPLE)]).expect("valid");
        let acme = p.org("acme");
        assert_eq!(acme.requests_per_minute, 1200);
        assert_eq!(acme.burst, 60, "inherited from defaults");
        assert_eq!(acme.quota.hard_tokens, 2_000_000);
        assert_eq!(acme.quota.period, Period::Month);
        assert_eq!(p.org("other").requests_per_minute, 600);
        let alice = p.effective("acme", "alice", None);
        assert_eq!(alice.user_requests_per_minute, 30);
        assert_eq!(
            p.effective("acme", "bob", None).user_requests_per_minute,
            120
        );
        assert!(alice.models.allows("llama3.1:8b") && !alice.models.allows("mistral:7b"));
    }

    #[test]
    fn nested_tables_load() {
        let p = load(&[("p.toml", "[orgs.acme.quota]\nhard_tokens = 5\n\n[orgs.acme.users.bob]\nmax_concurrent_streams = 1\n\n[orgs.acme.keys.ci]\nuser_requests_per_minute = 7\nmodels = [\"qwen*\"]\n")]).expect("valid");
        let ci = p.effective("acme", "key:ci", Some("ci"));
        assert_eq!(ci.user_requests_per_minute, 7);
        assert!(ci.models.allows("qwen2.5:7b") && !ci.models.allows("llama3:8b"));
        assert_eq!(p.org("acme").quota.hard_tokens, 5);
        assert_eq!(
            p.effective("acme", "bob", None).user_max_concurrent_streams,
            1
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e =
            load(&[("p.toml", "[defaults]\nrequests_per_minute = -5\n")]).expect_err("negative");
        assert_eq!(
            e.to_string(),
            "p.toml:2: defaults.requests_per_minute: -5 must not be negative"
        );
        let e = load(&[("p.toml", "[orgs.acme]\nrequests_per_minut = 5\n")]).expect_err("typo");
        assert!(e.to_string().starts_with("p.toml:"), "{e}");
        assert!(e.to_string().contains("requests_per_minut"), "{e}");
        let e = load(&[(
            "p.toml",
            "[orgs.acme.quota]\nsoft_tokens = 10\nhard_tokens = 5\n",
        )])
        .expect_err("soft > hard");
        assert!(
            e.to_string()
                .contains("soft_tokens (10) is above hard_tokens (5)"),
            "{e}"
        );
        let e = load(&[("p.toml", "[orgs.acme]\nmodels = [\"llama[\"]\n")]).expect_err("glob");
        assert!(
            e.to_string()
                .starts_with("p.toml:2: orgs.acme.models: \"llama[\""),
            "{e}"
        );
        let e = load(&[
            ("a.toml", "[orgs.acme]\nburst = 1\n"),
            ("b.toml", "\n[orgs.acme]\nburst = 2\n"),
        ])
        .expect_err("dup");
        assert!(e.to_string().starts_with("b.toml:"), "{e}");
        assert!(e.to_string().contains("already defined in a.toml"), "{e}");
        let e = load(&[("p.toml", "[orgs.acme]\nweight = 0\n")]).expect_err("weight");
        assert!(
            e.to_string().contains("weight: 0 must be at least 1"),
            "{e}"
        );
        let e = load(&[("p.toml", "[orgs.acme]\nburst = \"ten\"\n")]).expect_err("type");
        assert!(e.to_string().starts_with("p.toml:2:"), "{e}");
    }
}

#[cfg(test)]
mod proptests;
