//! `/api/conversations` and `/api/conversations/{id}`: create, list (newest first), read,
//! rename or change model, delete. Scoping is done by the queries (see `db/conversations.rs`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::errors::{ApiError, ApiResult};
use super::extract::{conversation_id, Caller, JsonObject, TextRule};
use super::page::{self, Page};
use super::AppState;
use crate::db::conversations::{self, Conversation};

/// Longest model name accepted (Ollama names are short; this only bounds junk).
const MAX_MODEL_CHARS: usize = 200;
const DEFAULT_TITLE: &str = "New conversation";

fn title_rule(state: &AppState, required: bool) -> TextRule {
    TextRule {
        name: "title",
        required,
        max_chars: Some(state.config.chat.max_title_chars),
        max_bytes: None,
    }
}

fn model_rule(required: bool) -> TextRule {
    TextRule {
        name: "model",
        required,
        max_chars: Some(MAX_MODEL_CHARS),
        max_bytes: None,
    }
}

/// `POST /api/conversations` `{"title", "model"}` → 201 with the conversation. `title` is
/// optional ("New conversation"); `model` is required.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonObject,
) -> ApiResult<Response> {
    body.only(&["title", "model"])?;
    let title = body
        .text(&title_rule(&state, false))?
        .unwrap_or_else(|| DEFAULT_TITLE.to_owned());
    let model = body.text(&model_rule(true))?.unwrap_or_default();
    let c = conversations::create(&state.pool, &caller.identity, &title, &model).await?;
    let location = format!("/api/conversations/{}", c.id);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(c),
    )
        .into_response())
}

/// `GET /api/conversations?limit=&cursor=`: the caller's (an admin: the org's), newest first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Page<Conversation>>> {
    let limit = page::limit(&query)?;
    let after = page::conversation_after(&query)?;
    let rows = conversations::list(&state.pool, &caller.identity, limit + 1, after).await?;
    Ok(Json(page::page(rows, limit, |c| {
        page::conversation_cursor(c.updated_at, c.id)
    })))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Conversation>> {
    let id = conversation_id(&id)?;
    conversations::get(&state.pool, &caller.identity, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("conversation"))
}

/// `PATCH /api/conversations/{id}` `{"title"?, "model"?}`: at least one of them.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonObject,
) -> ApiResult<Json<Conversation>> {
    let id = conversation_id(&id)?;
    body.only(&["title", "model"])?;
    let title = body.text(&title_rule(&state, false))?;
    let model = body.text(&model_rule(false))?;
    if title.is_none() && model.is_none() {
        return Err(ApiError::bad_request(
            "body: nothing to change (give title and/or model)",
        ));
    }
    conversations::update(
        &state.pool,
        &caller.identity,
        id,
        title.as_deref(),
        model.as_deref(),
    )
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("conversation"))
}

/// `DELETE /api/conversations/{id}` → 204; its messages go with it.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = conversation_id(&id)?;
    if conversations::delete(&state.pool, &caller.identity, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("conversation"))
    }
}
