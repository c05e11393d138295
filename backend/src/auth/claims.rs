//! Who the caller is, read from verified claims under the claim names the operator chose
//! (the gateway's rules: a literal key first, then a dotted path into nested objects).

use serde_json::{Map, Value};

use super::{AuthError, Identity};

/// Longest org or user id accepted (ids key rows and policies, they are not prose).
const MAX_ID_LEN: usize = 256;

pub(super) struct ClaimNames {
    pub org: String,
    pub user: String,
    pub role: Option<String>,
}

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
    Ok(Identity {
        user,
        org,
        roles,
        admin: false,
    })
}

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
        Some(Value::String(s)) if s.is_empty() => {
            Err(AuthError::invalid(format!("token has no {name} claim")))
        }
        Some(Value::String(s)) if s.len() > MAX_ID_LEN || s.chars().any(char::is_control) => Err(
            AuthError::invalid(format!("{name} claim is not a valid id")),
        ),
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(AuthError::invalid(format!("token has no {name} claim"))),
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
