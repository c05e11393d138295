//! `GET /api/orgs/{org}/audit?limit=&cursor=`: the org's audit log, newest first, for the
//! org's admins and operators (another org is 404, a member gets 403). Its items are the
//! `audit` objects the key changes answer with; a revoke answers 204 with no body, and is
//! this list's newest item afterwards.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;

use super::access;
use super::errors::ApiResult;
use super::extract::Caller;
use super::page::{self, Page};
use super::AppState;
use crate::db::audit::{self, AuditEntry};

pub async fn list(
    State(state): State<AppState>,
    Path(org): Path<String>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    access::administer(
        &caller,
        &org,
        "the audit log is for the org's admins and operators",
    )?;
    let limit = page::limit(&query)?;
    let after = page::audit_after(&query)?;
    let rows = audit::list(&state.pool, &org, limit + 1, after).await?;
    Ok(Json(page::page(rows, limit, |e| {
        page::audit_cursor(e.at, e.id)
    })))
}
