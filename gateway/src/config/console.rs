//! `[console]`: the operator console the gateway serves itself, and who counts as an operator.

use toml::Spanned;

use super::error::{line_of, ConfigError};

/// The `[console]` section as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    pub enabled: Option<bool>,
    pub path: Option<Spanned<String>>,
    pub operator_roles: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Serve the page (the admin API at `/admin/api/` is served either way).
    pub enabled: bool,
    /// Where the page lives, with a leading and a trailing `/` (`/console/`).
    pub path: String,
    /// A token with one of these roles sees every org, the pool and the policy.
    pub operator_roles: Vec<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/console/".into(),
            operator_roles: vec!["operator".into()],
        }
    }
}

impl ConsoleConfig {
    /// Validates the section; errors name the file, line, key and value.
    pub fn from_section(s: &ConsoleSection, file: &str, text: &str) -> Result<Self, ConfigError> {
        let mut c = ConsoleConfig::default();
        let err = |span: std::ops::Range<usize>, msg: String| {
            ConfigError::in_file(file, line_of(text, Some(span)), msg)
        };
        if let Some(enabled) = s.enabled {
            c.enabled = enabled;
        }
        if let Some(path) = &s.path {
            c.path = console_path(path.get_ref()).map_err(|m| {
                err(
                    path.span(),
                    format!("console.path: \"{}\": {m}", path.get_ref()),
                )
            })?;
        }
        if let Some(roles) = &s.operator_roles {
            if roles.get_ref().iter().any(|r| r.trim().is_empty()) {
                let msg = "console.operator_roles: a role may not be empty".to_string();
                return Err(err(roles.span(), msg));
            }
            c.operator_roles = roles.get_ref().clone();
        }
        Ok(c)
    }
}

/// A path the page can live under: absolute, plain characters, and clear of the paths the
/// gateway proxies or answers itself (so it can never hide an API).
fn console_path(raw: &str) -> Result<String, String> {
    let mut p = raw.trim().to_string();
    if !p.starts_with('/') {
        return Err("must start with /".into());
    }
    if !p.ends_with('/') {
        p.push('/');
    }
    let plain = p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
    if !plain || p.contains("//") || p.contains("/./") || p.contains("/../") {
        return Err("may hold only letters, digits, -, _, . and single / between names".into());
    }
    let taken = ["/api/", "/v1/", "/admin/"];
    let own = ["/", "/healthz/", "/readyz/", "/metrics/"];
    if own.contains(&p.as_str()) || taken.iter().any(|t| p.starts_with(t)) {
        let msg = "is taken by the gateway's own paths (/, /healthz, /readyz, /metrics, /api/, /v1/, /admin/)";
        return Err(msg.into());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::console_path;

    #[test]
    fn console_paths() {
        assert_eq!(console_path("/console").as_deref(), Ok("/console/"));
        assert_eq!(
            console_path("/ops/console/").as_deref(),
            Ok("/ops/console/")
        );
        for bad in [
            "console",
            "/",
            "/api/console",
            "/v1/",
            "/admin/x",
            "/a/../b",
            "/a b/",
            "//x/",
            "/healthz",
            "/metrics/",
        ] {
            assert!(console_path(bad).is_err(), "{bad}");
        }
    }
}
