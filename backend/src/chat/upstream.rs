//! The call to `{GATEWAY_URL}/api/chat`. The caller's `Authorization` goes with it: the
//! gateway then applies that org's rate limits, quotas and model access to the turn, exactly
//! as if the client had called it directly.
//!
//! A refusal before streaming (401, 403 model not allowed, 404 unknown model, 429 limits,
//! 503 pool busy) comes back to the caller as the gateway sent it: status, JSON body and
//! the headers a client acts on (`Retry-After`, `RateLimit*`, `X-Quota-*`).

use axum::body::Body;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::errors::ApiError;
use crate::api::AppState;
use crate::db::conversations::Conversation;

/// Headers of a gateway refusal that the caller gets too.
const PASSED_HEADERS: &[&str] = &[
    "content-type",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "www-authenticate",
    "x-quota-limit",
    "x-quota-used",
    "x-quota-warning",
];

/// Longest refusal body relayed (they are small JSON objects).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Starts the model's reply. `Err` is the response the caller gets instead.
pub async fn open(
    state: &AppState,
    conversation: &Conversation,
    history: &[(String, String)],
    authorization: &str,
    request_id: &str,
) -> Result<reqwest::Response, Response> {
    let messages: Vec<Value> = history
        .iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let body = json!({"model": conversation.model, "messages": messages, "stream": true});
    let url = format!("{}/api/chat", state.config.gateway.url);
    let sent = state
        .http
        .post(&url)
        .header(reqwest::header::AUTHORIZATION, authorization)
        .header("x-request-id", request_id)
        // The gateway sends every turn of one conversation to the instance holding its
        // prompt cache; the conversation's id names it even when its history is edited.
        .header("x-corral-session", conversation.id.to_string())
        .json(&body)
        .send()
        .await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(url = %url, error = %e, "gateway unreachable for a chat turn");
            return Err(ApiError::unavailable(
                "the model pool is unreachable (gateway did not answer); retry shortly",
                5,
            )
            .into_response());
        }
    };
    if resp.status() == reqwest::StatusCode::OK {
        return Ok(resp);
    }
    Err(pass_through(resp).await)
}

/// The gateway's refusal, as the caller's answer.
async fn pass_through(resp: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = Vec::new();
    for name in PASSED_HEADERS {
        if let Some(v) = resp.headers().get(*name) {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                headers.push((n, v.clone()));
            }
        }
    }
    let bytes = read_bounded(resp).await;
    let is_json = serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v.is_object());
    let mut out = if is_json {
        Response::new(Body::from(bytes))
    } else {
        // Not the gateway's JSON (a proxy in between?): still answer in our shape.
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        let message = if text.is_empty() {
            format!("the gateway answered {status}")
        } else {
            text
        };
        let code = match status.as_u16() {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            429 => "rate_limited",
            400..=499 => "bad_request",
            _ => "upstream_unavailable",
        };
        headers.retain(|(n, _)| n != axum::http::header::CONTENT_TYPE);
        axum::Json(json!({"error": message, "code": code})).into_response()
    };
    *out.status_mut() = status;
    for (name, value) in headers {
        out.headers_mut().insert(name, value);
    }
    out
}

async fn read_bounded(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_ERROR_BODY {
            out.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    out
}
