//! What handlers take from a request: the verified caller, a JSON object body, and typed
//! fields of it, each refusing bad input with a 400 that names the field.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderName, HeaderValue};
use corral_auth::api_key;
use corral_auth::key_store;
use serde_json::{Map, Value};

use super::errors::ApiError;
use super::AppState;
use crate::auth::{AuthError, Identity};
use crate::db::DbError;

/// The caller, from a verified `Authorization: Bearer` token or API key (`Bearer crl_...`
/// or `x-api-key: crl_...`). `X-Corral-*` headers are ignored: only the credential says who
/// is calling.
pub struct Caller {
    pub identity: Identity,
    /// The header as sent, forwarded to the gateway on chat calls so the org's limits and
    /// quotas apply to them.
    pub authorization: String,
    /// The client's address as the gateway saw it (`X-Real-IP`), for the audit log.
    pub ip: Option<String>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header_text = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let authorization = header_text(header::AUTHORIZATION);
        let x_api_key = header_text(HeaderName::from_static("x-api-key"));
        let identity = match api_key::presented(authorization, x_api_key) {
            Some(key) => key_identity(state, key).await?,
            None => state.verifier.verify(authorization).await?,
        };
        let authorization = match (authorization, x_api_key) {
            (Some(a), _) => a.to_owned(),
            (None, Some(key)) => format!("Bearer {key}"),
            (None, None) => String::new(),
        };
        Ok(Caller {
            identity,
            authorization,
            ip: header_text(HeaderName::from_static("x-real-ip")).map(str::to_owned),
        })
    }
}

/// Resolves an API key against the database. An unknown id costs the same HMAC as a known
/// one, so timing does not tell whether an id exists.
async fn key_identity(state: &AppState, key: &str) -> Result<Identity, ApiError> {
    let refuse = |reason: &str| ApiError::from(AuthError::invalid(reason));
    let Some(pepper) = state.verifier.pepper() else {
        return Err(refuse(
            "API keys are not enabled (API_KEY_PEPPER is not set)",
        ));
    };
    let parts = api_key::parse(key).map_err(refuse)?;
    let conn = state.pool.get().await?;
    let record = key_store::load(&*conn, parts.id)
        .await
        .map_err(DbError::from)?;
    let id = key_store::check(record.as_ref(), pepper, parts.secret, SystemTime::now())
        .map_err(|r| refuse(r.reason()))?;
    Ok(Identity {
        admin: state.verifier.is_admin(&id.roles),
        operator: state.verifier.is_operator(&id.roles),
        user: id.user,
        org: id.org,
        roles: id.roles,
        key_id: Some(id.key_id),
    })
}

/// A request body that must be one JSON object.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(e.status(), "payload_too_large", "request body is too large")
            } else {
                ApiError::bad_request(format!("body: {}", e.body_text()))
            }
        })?;
        Self::parse(&bytes)
    }
}

impl JsonObject {
    /// Parses a body already read.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::bad_request("body: expected a JSON object")),
            Err(e) => Err(ApiError::bad_request(format!("body: invalid JSON: {e}"))),
        }
    }
}

/// Limits on one string field.
pub struct TextRule {
    pub name: &'static str,
    pub required: bool,
    /// Longest value, in characters (`max_bytes` is checked too when set).
    pub max_chars: Option<usize>,
    pub max_bytes: Option<usize>,
}

impl JsonObject {
    /// A string field: absent is `None` (or a 400 when required); `null` counts as absent;
    /// any other type, an empty or blank string, or an over-long one is a 400 naming it.
    pub fn text(&self, rule: &TextRule) -> Result<Option<String>, ApiError> {
        let name = rule.name;
        let value = match self.0.get(name) {
            None | Some(Value::Null) if rule.required => {
                return Err(ApiError::field(name, "is required"))
            }
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(ApiError::field(
                    name,
                    format!("expected a string, got {}", type_name(other)),
                ))
            }
        };
        if value.trim().is_empty() {
            return Err(ApiError::field(name, "must not be empty"));
        }
        if let Some(max) = rule.max_bytes.filter(|m| value.len() > *m) {
            return Err(ApiError::field(
                name,
                format!("is {} bytes, longer than the limit of {max}", value.len()),
            ));
        }
        if let Some(max) = rule.max_chars {
            let chars = value.chars().count();
            if chars > max {
                return Err(ApiError::field(
                    name,
                    format!("is {chars} characters, longer than the limit of {max}"),
                ));
            }
        }
        Ok(Some(value.clone()))
    }

    /// Refuses fields this endpoint does not know, so a misspelt key is not silently ignored.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(unknown) => Err(ApiError::field(
                unknown,
                format!("unknown field (expected {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Path ids that do not parse are unknown ids: 404, like any id the caller cannot see.
pub fn conversation_id(text: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::not_found("conversation"))
}
