//! `/api/orgs/{org}/keys`: an org's API keys. Create (the secret shown once), list (never a
//! secret or hash), rotate (a new secret; the old one works for `grace_s`), revoke (at once,
//! every secret). Admins of that org and operators (`api::access`): for anyone else another
//! org's keys are 404, a member gets 403. Create and rotate honour `Idempotency-Key`; every
//! change writes an audit row, which the answer shows.
//!
//! No escalation through a key: a key carrying one of `auth.operator_roles` would make its
//! holder an operator of every org, so only an operator may create one, or rotate one (a new
//! secret of it is the same power). An org admin may still list and revoke such a key of its
//! org: that takes power away, never gives it.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use corral_auth::api_key::Pepper;
use serde_json::{json, Value};

use super::access;
use super::errors::{ApiError, ApiResult};
use super::extract::{Caller, JsonObject, TextRule};
use super::idempotency::{self, Replayable};
use super::page;
use super::AppState;
use crate::db::audit::Actor;
use crate::db::keys::{self, KeysError, NewKey};

/// Longest grace period a rotation may give the old secret.
const MAX_GRACE_S: i64 = 30 * 86_400;
const DEFAULT_GRACE_S: i64 = 86_400;
const MAX_NAME: usize = 64;
const MAX_MODELS: usize = 64;

/// The caller must administer `org` (its admin, or an operator); who may not even see it
/// gets 404.
fn admin_of(caller: &Caller, org: &str) -> Result<(), ApiError> {
    access::administer(
        caller,
        org,
        "managing API keys needs an admin role in the org (or an operator role)",
    )
}

/// Refuses a non-operator a key that carries an operator role: `doing` says what was asked.
fn operator_role_guard(
    state: &AppState,
    caller: &Caller,
    role: Option<&str>,
    doing: &str,
) -> Result<(), ApiError> {
    match role {
        Some(role) if !caller.identity.operator && state.verifier.is_operator_role(role) => {
            Err(ApiError::forbidden(format!(
                "role: \"{role}\" is an operator role (auth.operator_roles): only an operator may \
                 {doing} a key carrying it"
            )))
        }
        _ => Ok(()),
    }
}

fn pepper(state: &AppState) -> Result<&Pepper, ApiError> {
    state.verifier.pepper().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_configured",
            "API keys are not enabled on this server: set API_KEY_PEPPER (the same for the backend and the gateway)",
        )
    })
}

/// The caller as the audit log names it; an operator acting on another org also names its
/// own.
fn actor(caller: &Caller, org: &str) -> Actor {
    let id = &caller.identity;
    let who = match &id.key_id {
        Some(key) => format!("key:{key}"),
        None => id.user.clone(),
    };
    Actor {
        who,
        ip: caller.ip.clone(),
        from_org: (id.org != org).then(|| id.org.clone()),
    }
}

impl From<KeysError> for ApiError {
    fn from(e: KeysError) -> Self {
        match e {
            KeysError::Db(e) => e.into(),
            KeysError::NotFound => ApiError::not_found("key"),
            KeysError::NameTaken(name) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("name: a key named \"{name}\" already exists in this org; rotate it to get a new secret"),
            ),
            KeysError::Random(why) => {
                tracing::error!(error = %why, "cannot mint an API key");
                ApiError::internal()
            }
        }
    }
}

fn body_of(bytes: &Bytes) -> Result<JsonObject, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(JsonObject(serde_json::Map::new()));
    }
    JsonObject::parse(bytes)
}

fn replayable<'a>(
    org: &'a str,
    headers: &'a HeaderMap,
    what: &[&[u8]],
) -> Result<Option<Replayable<'a>>, ApiError> {
    let header = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    Replayable::from_header(org, header, what)
}

/// `POST /api/orgs/{org}/keys` `{"name", "role"?, "owner_user"?, "expires_at"?, "models"?}`
/// → 201 with the key (`key` is the secret, shown this once).
pub async fn create(
    State(state): State<AppState>,
    Path(org): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    admin_of(&caller, &org)?;
    let pepper = pepper(&state)?;
    let body = body_of(&bytes)?;
    let new = new_key(&body)?;
    // Before any replay: an idempotent answer holds the secret.
    operator_role_guard(&state, &caller, new.role.as_deref(), "create")?;
    let replay = replayable(&org, &headers, &[b"create", &bytes])?;
    let (status, answer) = idempotency::run(&state.pool, pepper, replay, || async {
        let minted = keys::create(&state.pool, pepper, &org, &new, &actor(&caller, &org)).await?;
        let answer = serde_json::to_value(&minted).map_err(|_| ApiError::internal())?;
        Ok((StatusCode::CREATED, answer))
    })
    .await?;
    let location = format!(
        "/api/orgs/{org}/keys/{}",
        answer["id"].as_str().unwrap_or("")
    );
    Ok((status, [("location", location)], Json(answer)).into_response())
}

/// `GET /api/orgs/{org}/keys?limit=&cursor=` → `{"items", "next_cursor"}`, newest first.
pub async fn list(
    State(state): State<AppState>,
    Path(org): Path<String>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    admin_of(&caller, &org)?;
    let limit = page::limit(&query)?;
    let after = page::key_after(&query)?;
    let rows = keys::list(&state.pool, &org, limit + 1, after).await?;
    let page = page::page(rows, limit, |k| page::key_cursor(k.created_at, &k.id));
    Ok(Json(page).into_response())
}

/// `POST /api/orgs/{org}/keys/{id}/rotate` `{"grace_s"?}` → 200 with the new secret and
/// `old_valid_until` (when the previous secret stops working).
pub async fn rotate(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    caller: Caller,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    admin_of(&caller, &org)?;
    let pepper = pepper(&state)?;
    let body = body_of(&bytes)?;
    body.only(&["grace_s"])?;
    let grace_s = match body.0.get("grace_s") {
        None | Some(Value::Null) => DEFAULT_GRACE_S,
        Some(v) => v
            .as_i64()
            .filter(|n| (0..=MAX_GRACE_S).contains(n))
            .ok_or_else(|| {
                ApiError::field(
                    "grace_s",
                    format!("expected whole seconds from 0 to {MAX_GRACE_S}"),
                )
            })?,
    };
    // Before any replay: an idempotent answer holds the secret. A key's role never changes,
    // so reading it outside the rotation's transaction is safe.
    let Some(role) = keys::role_of(&state.pool, &org, &id).await? else {
        return Err(ApiError::not_found("key"));
    };
    operator_role_guard(&state, &caller, role.as_deref(), "rotate")?;
    let replay = replayable(&org, &headers, &[b"rotate", id.as_bytes(), &bytes])?;
    let (status, answer) = idempotency::run(&state.pool, pepper, replay, || async {
        let (minted, until) = keys::rotate(
            &state.pool,
            pepper,
            &org,
            &id,
            grace_s,
            &actor(&caller, &org),
        )
        .await?;
        let mut answer = serde_json::to_value(&minted).map_err(|_| ApiError::internal())?;
        answer["old_valid_until"] = json!(until);
        Ok((StatusCode::OK, answer))
    })
    .await?;
    Ok((status, Json(answer)).into_response())
}

/// `DELETE /api/orgs/{org}/keys/{id}` → 204: refused from now on, every secret of it.
pub async fn revoke(
    State(state): State<AppState>,
    Path((org, id)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<Response> {
    admin_of(&caller, &org)?;
    keys::revoke(&state.pool, &org, &id, &actor(&caller, &org)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Checks a create body: `name` (letters, digits, `-`, `_`: policy files name keys in table
/// headers), and the optional fields.
fn new_key(body: &JsonObject) -> Result<NewKey, ApiError> {
    body.only(&["name", "role", "owner_user", "expires_at", "models"])?;
    let text = |name, required, max| {
        body.text(&TextRule {
            name,
            required,
            max_chars: Some(max),
            max_bytes: None,
        })
    };
    let name = text("name", true, MAX_NAME)?.unwrap_or_default();
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::field(
            "name",
            "only letters, digits, '-' and '_' (policy files name keys by it)",
        ));
    }
    let expires_at = match text("expires_at", false, 64)? {
        None => None,
        Some(t) => Some(parse_future_time(&t)?),
    };
    Ok(NewKey {
        name,
        role: text("role", false, 64)?,
        owner_user: text("owner_user", false, 256)?,
        models: models(body)?,
        expires_at,
    })
}

fn parse_future_time(text: &str) -> Result<DateTime<Utc>, ApiError> {
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|_| {
            ApiError::field(
                "expires_at",
                "expected an RFC 3339 time, e.g. 2027-01-31T00:00:00Z",
            )
        })?
        .with_timezone(&Utc);
    if at <= Utc::now() {
        return Err(ApiError::field("expires_at", "is in the past"));
    }
    Ok(at)
}

fn models(body: &JsonObject) -> Result<Option<Vec<String>>, ApiError> {
    let list = match body.0.get("models") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(ApiError::field(
                "models",
                "expected an array of model patterns",
            ))
        }
    };
    if list.is_empty() || list.len() > MAX_MODELS {
        return Err(ApiError::field(
            "models",
            format!("expected 1 to {MAX_MODELS} patterns (leave it out for the org's own)"),
        ));
    }
    list.iter()
        .map(|v| match v.as_str() {
            Some(p) if !p.trim().is_empty() && p.len() <= 256 => Ok(p.to_owned()),
            _ => Err(ApiError::field(
                "models",
                "each pattern is a non-empty string of at most 256 bytes",
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
