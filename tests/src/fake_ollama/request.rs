//! Reading request bodies the way Ollama does, and the errors it answers with.
//!
//! Native routes answer `{"error": "..."}`; `/v1/*` routes wrap the same message in
//! OpenAI's shape, with the `type` Ollama's openai middleware picks from the status.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};

/// Ollama's answer when its queue is full (note the two spaces, as in Ollama's source).
pub const BUSY_MESSAGE: &str = "server busy, please try again.  maximum pending requests exceeded";

/// What Ollama reports when its model runner fails mid-generation.
pub const MODEL_ERROR: &str = "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details";

/// An error answered before anything streams, with a real status code.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("model \"{model}\" not found, try pulling it first"),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }

    pub fn busy() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: BUSY_MESSAGE.to_string(),
        }
    }

    /// `{"error": "..."}`, as on `/api/*`.
    pub fn native(self) -> Response {
        json_response(self.status, &json!({ "error": self.message }))
    }

    /// `{"error": {"message", "type", "param", "code"}}`, as on `/v1/*`.
    pub fn openai(self) -> Response {
        json_response(self.status, &self.openai_body())
    }

    /// The OpenAI-shaped body alone, also sent as an SSE event when a stream fails.
    pub fn openai_body(&self) -> Value {
        let kind = match self.status {
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            _ => "api_error",
        };
        json!({
            "error": { "message": self.message, "type": kind, "param": null, "code": null }
        })
    }
}

/// A JSON answer with gin's content type; structs keep Ollama's field order.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response()
}

/// Parses a body as a JSON object; Ollama refuses an empty body and malformed JSON
/// with 400 before looking at anything else.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing request body"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "json: cannot unmarshal value into Go value of type api.Request",
        ))
    }
}

/// The `model` field (or the legacy `name`), which every model request needs.
pub(crate) fn model_of(request: &Value) -> Result<String, ApiError> {
    ["model", "name"]
        .iter()
        .filter_map(|key| request.get(*key).and_then(Value::as_str))
        .find(|m| !m.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("model is required"))
}

/// A model request's body and its model: what every generating route reads first.
pub(crate) fn read_model_request(body: &[u8]) -> Result<(Value, String), ApiError> {
    let request = parse_body(body)?;
    let model = model_of(&request)?;
    Ok((request, model))
}

/// `stream`, with the route's default (true on `/api/*`, false on `/v1/*`).
pub(crate) fn stream_flag(request: &Value, default: bool) -> bool {
    request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(default)
}

/// The text of a message `content`: a string, or OpenAI's array of `{"type":"text"}` parts.
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The contents of every message in `messages`.
pub(crate) fn message_texts(request: &Value) -> Vec<String> {
    request
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .map(|m| content_text(m.get("content")))
                .collect()
        })
        .unwrap_or_default()
}

/// An `input`/`prompt` that may be one string or a list of strings.
pub(crate) fn string_or_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Counts for the prompt-token rule from owned strings.
pub(crate) fn prompt_tokens(texts: &[String]) -> u64 {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    super::shapes::prompt_tokens_for(&refs)
}

/// The first integer found among `keys` of `object` (e.g. `num_predict`, `max_tokens`).
pub(crate) fn int_field(object: Option<&Value>, keys: &[&str]) -> Option<i64> {
    let object = object?;
    keys.iter()
        .find_map(|k| object.get(*k).and_then(Value::as_i64))
}
