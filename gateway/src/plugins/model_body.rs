//! Reads a model request's JSON body before an instance is chosen, to learn the `model` (and
//! `stream`). Malformed JSON and a missing model are answered here with 400, so no GPU is
//! touched by a request that cannot succeed.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;
use serde::Deserialize;

use super::{Flow, Plugin};
use crate::context::{ModelRequest, RequestCtx};
use crate::errors::GatewayError;
use crate::json_depth;
use crate::pool::normalize_model;
use crate::routes::OllamaEndpoint;

pub struct ModelBody {
    pub max: usize,
}

/// Only the fields the gateway needs; serde still checks the whole document is valid JSON.
#[derive(Deserialize)]
struct Fields {
    model: Option<serde_json::Value>,
    /// `/api/show` used to take `name`.
    name: Option<serde_json::Value>,
    stream: Option<serde_json::Value>,
}

#[async_trait]
impl Plugin for ModelBody {
    fn name(&self) -> &'static str {
        "model_body"
    }

    async fn on_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow> {
        if ctx.endpoint != Some(OllamaEndpoint::Model) {
            return Ok(Flow::Continue);
        }
        if session.req_header().method != http::Method::POST {
            return Ok(Flow::Respond(GatewayError::new(
                405,
                "method_not_allowed",
                format!("{} needs POST", session.req_header().uri.path()),
            )));
        }
        // Pingora replays what it buffered here to the upstream (and on a retry).
        session.as_downstream_mut().enable_retry_buffering();
        let body = match read_body(session, self.max).await? {
            Ok(body) => body,
            Err(e) => return Ok(Flow::Respond(e)),
        };
        let default_stream = !session.req_header().uri.path().starts_with("/v1/");
        match parse(&body, default_stream) {
            Ok(model) => {
                ctx.model = Some(model);
                ctx.body = Some(body);
                Ok(Flow::Continue)
            }
            Err(e) => Ok(Flow::Respond(e)),
        }
    }
}

async fn read_body(
    session: &mut Session,
    max: usize,
) -> pingora_error::Result<Result<Bytes, GatewayError>> {
    let mut buf = BytesMut::new();
    // Errors here are the client's (a cut connection, a malformed chunk): marked so, they get
    // 400 or nothing instead of a 500 and an ERROR line.
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| e.into_down())?
    {
        if buf.len() + chunk.len() > max {
            return Ok(Err(GatewayError::payload_too_large(max)));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Ok(buf.freeze()))
}

/// Longest model name accepted, in bytes: Ollama's names (registry/namespace/model:tag) are
/// far shorter, and a longer one would only travel into logs, metrics and error messages.
pub const MAX_MODEL_NAME: usize = 256;

/// Validates the body and pulls out what routing needs.
pub fn parse(body: &[u8], default_stream: bool) -> Result<ModelRequest, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request(
            "the request body is empty: expected a JSON object",
        ));
    }
    json_depth::check(body, json_depth::MAX_DEPTH)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON in request body: {e}")))?;
    let fields: Fields = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON in request body: {e}")))?;
    let model = match fields.model.or(fields.name) {
        Some(serde_json::Value::String(m)) if m.len() > MAX_MODEL_NAME => {
            return Err(GatewayError::bad_request(format!(
                "model: the name is {} bytes, longer than the limit of {MAX_MODEL_NAME}",
                m.len()
            )))
        }
        Some(serde_json::Value::String(m)) if !m.trim().is_empty() => m,
        Some(serde_json::Value::String(_)) | None => {
            return Err(GatewayError::bad_request("model is required"))
        }
        Some(other) => {
            return Err(GatewayError::bad_request(format!(
                "model must be a string, got {other}"
            )))
        }
    };
    let stream = match fields.stream {
        None | Some(serde_json::Value::Null) => default_stream,
        Some(serde_json::Value::Bool(b)) => b,
        Some(other) => {
            return Err(GatewayError::bad_request(format!(
                "stream must be true or false, got {other}"
            )))
        }
    };
    Ok(ModelRequest {
        normalized: normalize_model(&model),
        model,
        stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream() {
        let m = parse(br#"{"model":"llama3","messages":[]}"#, true).expect("valid");
        assert_eq!(
            (m.model.as_str(), m.normalized.as_str(), m.stream),
            ("llama3", "llama3:latest", true)
        );
        let m = parse(br#"{"model":"q:7b","stream":false}"#, true).expect("valid");
        assert!(!m.stream);
        let m = parse(br#"{"model":"q:7b"}"#, false).expect("valid");
        assert!(!m.stream);
    }

    #[test]
    fn refuses_bad_bodies() {
        let e = parse(br#"{"model":"x","messages":[}"#, true).expect_err("invalid");
        assert_eq!(e.status, 400);
        assert!(
            e.message.starts_with("invalid JSON in request body: "),
            "{}",
            e.message
        );
        assert_eq!(parse(b"", true).expect_err("empty").status, 400);
        assert!(parse(br#"{"messages":[]}"#, true)
            .expect_err("no model")
            .message
            .contains("model is required"));
        assert!(parse(br#"{"model":3}"#, true).is_err());
        assert!(parse(br#"[1,2]"#, true).is_err());
        assert!(parse(br#"{"model":"x","stream":"yes"}"#, true).is_err());
    }
}

#[cfg(test)]
mod proptests;
