//! Who the caller is, read from verified claims under the claim names the operator chose.
//!
//! Org and user go upstream as `X-Corral-Org` / `X-Corral-User` and key rate limits and
//! quotas, so they must be non-empty strings that are safe in a header.

use serde_json::{Map, Value};

use super::error::AuthError;
use super::Identity;

/// Longest org or user id accepted (ids are keys of policies and counters, not prose).
const MAX_ID_LEN: usize = 256;

/// The claim names of `AuthSettings`.
pub(super) struct ClaimNames {
    pub org: String,
    pub user: String,
    pub role: Option<String>,
}

/// Builds the identity of a token whose signature and registered claims were checked.
pub(super) fn identity(
    claims: &Map<String, Value>,
    names: &ClaimNames,
) -> Result<Identity, AuthError> {
    let user = id_claim(claims, &names.user)?;
    let org = id_claim(claims, &names.org)?;
    let roles = names
        .role
        .as_deref()
        .map(|name| roles(claims, name))
        .unwrap_or_default();
    // `exp` is required and was validated as a number by jsonwebtoken (which also takes floats).
    let expires_at = match claims.get("exp") {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
            .unwrap_or(0),
        _ => 0,
    };
    Ok(Identity {
        user,
        org,
        roles,
        expires_at,
    })
}

/// A claim by name: the literal key first (namespaced claims such as
/// `https://example.com/org` contain dots), then a dotted path into nested objects
/// (`realm_access.roles`).
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn id_claim(claims: &Map<String, Value>, name: &str) -> Result<String, AuthError> {
    match lookup(claims, name) {
        None | Some(Value::Null) => Err(AuthError::invalid(format!("token has no {name} claim"))),
        Some(Value::String(s)) if s.is_empty() => {
            Err(AuthError::invalid(format!("token has no {name} claim")))
        }
        Some(Value::String(s)) if s.len() > MAX_ID_LEN || s.chars().any(char::is_control) => Err(
            AuthError::invalid(format!("{name} claim is not a valid id")),
        ),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(AuthError::invalid(format!("{name} claim is not a string"))),
    }
}

/// A role claim may be one string or an array of strings (other entries are ignored).
fn roles(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match lookup(claims, name) {
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names() -> ClaimNames {
        ClaimNames {
            org: "org".into(),
            user: "sub".into(),
            role: Some("role".into()),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn identity_from_default_claims() {
        let c = claims(json!({"sub": "alice", "org": "acme", "role": "admin", "exp": 1700000000}));
        let id = identity(&c, &names()).expect("identity");
        assert_eq!(
            id,
            Identity {
                user: "alice".into(),
                org: "acme".into(),
                roles: vec!["admin".into()],
                expires_at: 1700000000
            }
        );
    }

    #[test]
    fn roles_may_be_an_array() {
        let c = claims(json!({"sub": "a", "org": "o", "role": ["admin", 3, "ops", ""], "exp": 1}));
        assert_eq!(
            identity(&c, &names()).expect("identity").roles,
            vec!["admin", "ops"]
        );
        let c = claims(json!({"sub": "a", "org": "o", "exp": 1}));
        assert!(identity(&c, &names()).expect("identity").roles.is_empty());
    }

    #[test]
    fn no_org_is_refused() {
        for c in [
            json!({"sub": "a", "exp": 1}),
            json!({"sub": "a", "org": null, "exp": 1}),
            json!({"sub": "a", "org": "", "exp": 1}),
        ] {
            let e = identity(&claims(c), &names()).unwrap_err();
            assert_eq!(e, AuthError::invalid("token has no org claim"));
        }
        let e = identity(&claims(json!({"sub": "a", "org": 7, "exp": 1})), &names()).unwrap_err();
        assert_eq!(e.description, "org claim is not a string");
        let e = identity(&claims(json!({"org": "o", "exp": 1})), &names()).unwrap_err();
        assert_eq!(e.description, "token has no sub claim");
    }

    #[test]
    fn ids_must_be_header_safe() {
        let c = claims(json!({"sub": "a", "org": "acme\r\nX-Corral-Org: evil", "exp": 1}));
        let e = identity(&c, &names()).unwrap_err();
        assert_eq!(e.description, "org claim is not a valid id");
        let c = claims(json!({"sub": "x".repeat(300), "org": "o", "exp": 1}));
        assert!(identity(&c, &names()).is_err());
    }

    #[test]
    fn configured_names_and_nested_paths() {
        let names = ClaimNames {
            org: "https://corral.example/org".into(),
            user: "email".into(),
            role: Some("realm_access.roles".into()),
        };
        let c = claims(json!({
            "email": "bob@example.com",
            "https://corral.example/org": "globex",
            "realm_access": {"roles": ["reader"]},
            "exp": 5
        }));
        let id = identity(&c, &names).expect("identity");
        assert_eq!(
            (id.user.as_str(), id.org.as_str()),
            ("bob@example.com", "globex")
        );
        assert_eq!(id.roles, vec!["reader"]);
    }
}
