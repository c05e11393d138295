//! Forwarding a model request whose body was too large for Pingora to replay.
//!
//! The gateway must read a request's JSON body to learn its model before choosing an instance,
//! and Pingora re-sends a body read early only from its 64 KiB retry buffer. Chats carrying
//! base64 images exceed that, so those requests are forwarded here with reqwest, streaming the
//! reply chunk by chunk through the same token counting and failure handling as the main path.

use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{failure, local};
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::pool::{retry_after_secs, SelectError, SlotGuard};
use crate::state::AppState;
use crate::usage::{FrameGate, UsageParser};

/// Whether this request needs the relay: its body was read but cannot be replayed.
pub fn needed(session: &Session, ctx: &RequestCtx) -> bool {
    ctx.body.is_some() && session.as_downstream().retry_buffer_truncated()
}

/// Sends the request to an instance (retrying others when connecting fails) and streams the
/// reply back. Always answers: `Ok(true)`.
pub async fn forward(
    session: &mut Session,
    ctx: &mut RequestCtx,
    state: &AppState,
) -> Result<bool> {
    let resp = match send(session, ctx, state).await {
        Ok(resp) => resp,
        Err(e) => return local::respond_error(session, ctx, &e).await,
    };
    let status = resp.status().as_u16();
    if let Some(slot) = &ctx.slot {
        state.pool.report_status(&slot.instance, status);
    }
    ctx.upstream_status = Some(status);
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    ctx.usage = UsageParser::for_content_type(&content_type);
    if status == 200 {
        ctx.frames = ctx.usage.as_ref().and_then(FrameGate::for_parser);
    }
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header("Content-Type", content_type.as_str())?;
    header.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    local::decorate(&mut header, ctx);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    ctx.response_started = true;
    ctx.answered = Some(status);
    stream_body(session, ctx, resp).await?;
    Ok(true)
}

async fn stream_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut resp: reqwest::Response,
) -> Result<()> {
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if let Some(p) = ctx.usage.as_mut() {
                    p.feed(&chunk);
                }
                let chunk = match ctx.strip_usage {
                    true => ctx
                        .stripper
                        .get_or_insert_with(Default::default)
                        .push(&chunk),
                    false => chunk,
                };
                let chunk = match ctx.frames.as_mut() {
                    Some(gate) => gate.push(chunk),
                    None => chunk,
                };
                session.write_response_body(Some(chunk), false).await?;
            }
            Ok(None) => {
                if let Some(p) = ctx.usage.as_mut() {
                    p.finish();
                }
                let mut rest = ctx
                    .stripper
                    .as_mut()
                    .map(|s| s.finish())
                    .unwrap_or_default();
                if let Some(gate) = ctx.frames.as_mut() {
                    rest = [gate.push(rest), gate.finish()].concat().into();
                }
                return session.write_response_body(Some(rest), true).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, request_id = %ctx.request_id, "instance failed mid-stream (relay)");
                failure::end_interrupted_stream(session, ctx).await;
                return Ok(());
            }
        }
    }
}

/// Picks an instance and sends the request; a connection failure ejects the instance and
/// tries another, up to `pool.retries` times.
async fn send(
    session: &Session,
    ctx: &mut RequestCtx,
    state: &AppState,
) -> Result<reqwest::Response, GatewayError> {
    let retry_after = retry_after_secs(state.config.pool.health_interval);
    let path = session
        .req_header()
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = ctx
        .body_rewrite
        .clone()
        .or_else(|| ctx.body.clone())
        .unwrap_or_default();
    loop {
        let model = ctx.model.as_ref().map(|m| m.normalized.clone());
        let slot: SlotGuard = match state
            .pool
            .acquire(
                model.as_deref(),
                &ctx.tried,
                super::upstream::requester(ctx),
            )
            .await
        {
            Ok(slot) => slot,
            Err(SelectError::ModelNotFound(_)) => {
                let asked = ctx
                    .model
                    .as_ref()
                    .map(|m| m.model.clone())
                    .unwrap_or_default();
                return Err(GatewayError::model_not_found(&asked));
            }
            Err(e) => return Err(e.into_gateway_error(retry_after)),
        };
        ctx.tried.push(slot.instance.index);
        let url = format!("{}{path}", slot.instance.url.base);
        let result = state
            .relay_client
            .post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("X-Request-Id", ctx.request_id.as_str())
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(resp) => {
                ctx.slot = Some(slot);
                return Ok(resp);
            }
            Err(e) if e.is_connect() && ctx.retries < state.config.pool.retries => {
                state.pool.report_connect_failure(&slot.instance);
                ctx.retries += 1;
                state.metrics.retries.inc();
            }
            Err(e) => {
                if e.is_connect() {
                    state.pool.report_connect_failure(&slot.instance);
                }
                return Err(GatewayError::bad_gateway(format!(
                    "the Ollama instance failed: {e}"
                )));
            }
        }
    }
}
