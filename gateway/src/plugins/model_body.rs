//! Reads a model request's JSON body before an instance is chosen, to learn the `model` (and
//! `stream`). Malformed JSON and a missing model are answered here with 400, so no GPU is
//! touched by a request that cannot succeed. Under cache-aware routing the same pass reads
//! the prompt as borrowed raw JSON and hashes it into the chain routing looks up, so a long
//! history is parsed once, not once more for routing.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};

use super::{Flow, Plugin};
use crate::context::{ModelRequest, RequestCtx};
use crate::errors::GatewayError;
use crate::json_depth;
use crate::pool::normalize_model;
use crate::pool::prefix::{self, PromptChain};
use crate::routes::OllamaEndpoint;

pub struct ModelBody {
    pub max: usize,
    /// Hash the prompt for cache-aware routing (`pool.balance = "cache_aware"`).
    pub prompt_chain: bool,
}

/// Only the fields the gateway needs; serde still checks the whole document is valid JSON.
#[derive(Deserialize)]
struct Fields {
    model: Option<Value>,
    /// `/api/show` used to take `name`.
    name: Option<Value>,
    stream: Option<Value>,
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
        let parsed = match self.prompt_chain {
            true => parse_with_prompt(&body, default_stream, ctx.conversation.as_deref()),
            false => parse(&body, default_stream).map(|m| (m, None)),
        };
        match parsed {
            Ok((model, prompt)) => {
                ctx.model = Some(model);
                ctx.body = Some(body);
                if let Some((chain, hashing)) = prompt {
                    ctx.prompt = Some(std::sync::Arc::new(chain));
                    ctx.prompt_hashing = hashing;
                }
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
    let fields: Fields = deserialize(body)?;
    model_request(fields.model, fields.name, fields.stream, default_stream)
}

/// [`parse`], and the prompt's block chain (with what hashing it took, part of the routing
/// decision's cost) when the body has a prompt or messages.
pub fn parse_with_prompt(
    body: &[u8],
    default_stream: bool,
    session: Option<&str>,
) -> Result<(ModelRequest, Option<(PromptChain, Duration)>), GatewayError> {
    let mut r: prefix::Request = deserialize(body)?;
    let (model, name, stream) = (r.model.take(), r.name.take(), r.stream.take());
    let request = model_request(model, name, stream, default_stream)?;
    let started = Instant::now();
    let chain = r.chain(&request.normalized, session);
    Ok((request, chain.map(|c| (c, started.elapsed()))))
}

/// The body as `T`, after the checks that keep hostile JSON cheap.
fn deserialize<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request(
            "the request body is empty: expected a JSON object",
        ));
    }
    json_depth::check(body, json_depth::MAX_DEPTH)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON in request body: {e}")))?;
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON in request body: {e}")))
}

/// Checks `model` (or the old `name`) and `stream`.
fn model_request(
    model: Option<Value>,
    name: Option<Value>,
    stream: Option<Value>,
    default_stream: bool,
) -> Result<ModelRequest, GatewayError> {
    let model = match model.or(name) {
        Some(Value::String(m)) if m.len() > MAX_MODEL_NAME => {
            return Err(GatewayError::bad_request(format!(
                "model: the name is {} bytes, longer than the limit of {MAX_MODEL_NAME}",
                m.len()
            )))
        }
        Some(Value::String(m)) if !m.trim().is_empty() => m,
        Some(Value::String(_)) | None => {
            return Err(GatewayError::bad_request("model is required"))
        }
        Some(other) => {
            return Err(GatewayError::bad_request(format!(
                "model must be a string, got {other}"
            )))
        }
    };
    let stream = match stream {
        None | Some(Value::Null) => default_stream,
        Some(Value::Bool(b)) => b,
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
    fn hashes_the_prompt_in_the_same_pass() {
        let turn = |model: &str| {
            format!(
                r#"{{"model":"{model}","messages":[{{"role":"system","content":"be brief"}},{{"role":"user","content":"hi"}}]}}"#
            )
        };
        let (m, chain) = parse_with_prompt(turn("llama3").as_bytes(), true, None).expect("valid");
        assert_eq!(m.normalized, "llama3:latest");
        let (chain, _) = chain.expect("a chain");
        assert_eq!((chain.blocks.len(), chain.system_blocks), (2, 1));
        assert_eq!(
            Some(&chain),
            prefix::chain(turn("llama3").as_bytes(), None).as_ref()
        );
        let (_, spelled) =
            parse_with_prompt(turn("llama3:latest").as_bytes(), true, None).expect("valid");
        assert_eq!(
            spelled.map(|(c, _)| c.blocks),
            Some(chain.blocks),
            "one model, however spelled, is one cache"
        );
        let (_, none) = parse_with_prompt(br#"{"model":"x"}"#, true, Some("s")).expect("valid");
        assert!(none.is_none(), "no prompt, no chain");
        let e = parse_with_prompt(br#"{"model":"x","messages":[{"role":1}"#, true, None);
        assert_eq!(e.expect_err("invalid").status, 400);
        let e = parse_with_prompt(br#"{"messages":[]}"#, true, None).expect_err("no model");
        assert!(e.message.contains("model is required"), "{}", e.message);
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
