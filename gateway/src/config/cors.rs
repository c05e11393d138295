//! The CORS policy: which browser origins may call the gateway, validated once.

use std::time::Duration;

/// An allowed origin: exact (`https://chat.example.com`) or a subdomain pattern
/// (`https://*.example.com`, any depth of subdomain, never the bare domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    Exact(String),
    Subdomains {
        scheme: String,
        suffix: String,
    },
    /// `*`: any origin, allowed only without credentials.
    Any,
}

#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub origins: Vec<OriginRule>,
    pub allow_credentials: bool,
    pub allow_methods: Vec<String>,
    /// Lowercase; a trailing `*` matches a prefix (`x-stainless-*`).
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            origins: Vec::new(),
            allow_credentials: false,
            allow_methods: strings(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            // What the official Ollama and OpenAI browser clients send.
            allow_headers: strings(&[
                "authorization",
                "content-type",
                "accept",
                "x-request-id",
                "x-stainless-*",
                "openai-organization",
                "openai-project",
                "openai-beta",
            ]),
            expose_headers: strings(&[
                "X-Request-Id",
                "X-Quota-Limit",
                "X-Quota-Used",
                "X-Quota-Warning",
                "RateLimit",
                "RateLimit-Policy",
                "Retry-After",
            ]),
            max_age: Duration::from_secs(600),
        }
    }
}

/// Parses one allowed origin as written by the operator.
pub fn parse_origin(text: &str) -> Result<OriginRule, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(OriginRule::Any);
    }
    let (scheme, host) = text.split_once("://").ok_or_else(|| {
        "expected scheme://host[:port], e.g. https://chat.example.com".to_string()
    })?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme \"{scheme}\" is not http or https"));
    }
    if host.is_empty() || host.contains('/') {
        return Err("an origin has no path: give scheme://host[:port] only".into());
    }
    let host = host.to_ascii_lowercase();
    match host.strip_prefix("*.") {
        Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => Ok(OriginRule::Subdomains {
            scheme: scheme.to_string(),
            suffix: format!(".{suffix}"),
        }),
        _ if host.contains('*') => {
            Err("a wildcard is only allowed as the first label: https://*.example.com".into())
        }
        _ => Ok(OriginRule::Exact(format!("{scheme}://{host}"))),
    }
}

impl OriginRule {
    pub fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(o) => *o == origin,
            OriginRule::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|r| r.strip_prefix("://"))
                .and_then(|host| host.strip_suffix(suffix.as_str()))
                .is_some_and(|label| !label.is_empty() && !label.contains(['/', ':', '@'])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_rules() {
        let exact = parse_origin("https://Chat.example.com").expect("valid");
        assert!(exact.matches("https://chat.example.com"));
        assert!(!exact.matches("http://chat.example.com"));
        let sub = parse_origin("https://*.example.com").expect("valid");
        assert!(sub.matches("https://a.example.com"));
        assert!(sub.matches("https://a.b.example.com"));
        assert!(!sub.matches("https://example.com"));
        assert!(!sub.matches("https://evil-example.com"));
        assert!(!sub.matches("https://a.example.com:8443"));
        assert!(!sub.matches("https://a.example.com.evil.net"));
        assert!(parse_origin("chat.example.com").is_err());
        assert!(parse_origin("https://a.*.com").is_err());
        assert!(parse_origin("https://x.com/path").is_err());
        assert_eq!(parse_origin("*"), Ok(OriginRule::Any));
    }
}
