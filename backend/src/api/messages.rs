//! `/api/conversations/{id}/messages`: the conversation's messages in order, and a new
//! message with the model's reply streamed back (NDJSON, as Ollama's `/api/chat` streams).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::errors::{ApiError, ApiResult};
use super::extract::{conversation_id, Caller, JsonObject, TextRule};
use super::page::{self, Page};
use super::AppState;
use crate::chat::{relay, upstream};
use crate::db::conversations;
use crate::db::messages::{self, Message, Turn};

/// `GET /api/conversations/{id}/messages?limit=&cursor=`: oldest first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Page<Message>>> {
    let id = conversation_id(&id)?;
    let limit = page::limit(&query)?;
    let after = page::message_after(&query)?;
    if conversations::get(&state.pool, &caller.identity, id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("conversation"));
    }
    let rows = messages::list(&state.pool, id, limit + 1, after).await?;
    Ok(Json(page::page(rows, limit, |m| {
        page::message_cursor(m.id)
    })))
}

/// `POST /api/conversations/{id}/messages` `{"content"}`: stores the message, asks the model
/// through the gateway with the conversation's history, streams the reply, stores it.
///
/// The response carries `X-Corral-Message-Id` (the reply's row, readable while it streams),
/// `X-Corral-User-Message-Id` and `X-Request-Id`.
pub async fn post(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> ApiResult<Response> {
    let id = conversation_id(&id)?;
    body.only(&["content"])?;
    let content = body
        .text(&TextRule {
            name: "content",
            required: true,
            max_chars: None,
            max_bytes: Some(state.config.chat.max_message_bytes),
        })?
        .unwrap_or_default();
    let request_id = chat_request_id(&headers);
    let history_limit = state.config.chat.history_messages as i64;
    let Some(turn) = messages::start_turn(
        &state.pool,
        &caller.identity,
        id,
        &content,
        history_limit,
        &request_id,
    )
    .await?
    else {
        return Err(ApiError::not_found("conversation"));
    };
    // Until the reply starts streaming, dropping this (the caller hung up while the gateway
    // was being asked) takes the turn back, as a refusal does.
    let mut pending = PendingTurn {
        state: state.clone(),
        turn: Some(turn),
    };
    let opened = match pending.turn.as_ref() {
        Some(turn) => {
            upstream::open(
                &state,
                &turn.conversation,
                &turn.history,
                &caller.authorization,
                &request_id,
            )
            .await
        }
        None => return Err(ApiError::internal()),
    };
    let upstream = match opened {
        Ok(resp) => resp,
        Err(refusal) => {
            pending.cancel().await;
            let outcome = if refusal.status() == StatusCode::SERVICE_UNAVAILABLE {
                "unreachable"
            } else {
                "refused"
            };
            crate::metrics::get()
                .chat_streams
                .with_label_values(&[outcome])
                .inc();
            return Ok(refusal);
        }
    };
    let Some(turn) = pending.turn.take() else {
        return Err(ApiError::internal());
    };
    let mut extra = Vec::new();
    for name in ["x-quota-limit", "x-quota-used", "x-quota-warning"] {
        if let Some(v) = upstream.headers().get(name) {
            extra.push((name, v.clone()));
        }
    }
    let ids = (turn.assistant_message_id, turn.user_message_id);
    let body = relay::spawn(&state, turn, upstream, request_id.clone());
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert("x-corral-message-id", HeaderValue::from(ids.0));
    h.insert("x-corral-user-message-id", HeaderValue::from(ids.1));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-request-id", v);
    }
    for (name, value) in extra {
        h.insert(name, value);
    }
    Ok(resp.into_response())
}

/// A stored turn whose reply has not started: removed again unless the relay takes it.
struct PendingTurn {
    state: AppState,
    turn: Option<Turn>,
}

impl PendingTurn {
    /// The model never saw it: take the turn back so a retry does not duplicate it.
    async fn cancel(&mut self) {
        if let Some(turn) = self.turn.take() {
            if let Err(e) = messages::cancel_turn(&self.state.pool, &turn).await {
                tracing::warn!(error = %e, "could not remove a refused turn");
            }
        }
    }
}

impl Drop for PendingTurn {
    fn drop(&mut self) {
        if let Some(turn) = self.turn.take() {
            let pool = self.state.pool.clone();
            tokio::spawn(async move {
                if let Err(e) = messages::cancel_turn(&pool, &turn).await {
                    tracing::warn!(error = %e, "could not remove an abandoned turn");
                }
            });
        }
    }
}

/// The id of the gateway call: derived from the caller's request id (so logs join up) but
/// distinct from it, since each gateway request records its own usage row by id.
fn chat_request_id(headers: &HeaderMap) -> String {
    let incoming = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 100
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
        });
    match incoming {
        Some(id) => format!("{id}.chat"),
        None => uuid::Uuid::new_v4().simple().to_string(),
    }
}
