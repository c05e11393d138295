//! Forwarding a model request whose body was too large for Pingora to replay.
//!
//! The gateway must read a request's JSON body to learn its model before choosing an instance,
//! and Pingora re-sends a body read early only from its 64 KiB retry buffer. Chats carrying
//! base64 images exceed that, so those requests are forwarded here on a connection of the
//! relay's own (`relay_conn`), streaming the reply chunk by chunk through the same token
//! counting and failure handling as the main path.

use hyper::body::Incoming;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::relay_conn::{self, Conn, Outgoing};
use super::{failure, local};
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::pool::{retry_after_secs, SelectError, SlotGuard};
use crate::state::AppState;

/// Whether this request needs the relay: its body was read but cannot be replayed.
pub fn needed(session: &Session, ctx: &RequestCtx) -> bool {
    ctx.body.is_some() && session.as_downstream().retry_buffer_truncated()
}

/// Sends the request to an instance (retrying others when connecting fails) and streams the
/// reply back. Always answers: `Ok(true)`. The connection to the instance is closed before
/// this returns, so the slot freed after it is really free.
pub async fn forward(
    session: &mut Session,
    ctx: &mut RequestCtx,
    state: &AppState,
) -> Result<bool> {
    let (resp, conn) = match send(session, ctx, state).await {
        Ok(sent) => sent,
        Err(e) => return local::respond_error(session, ctx, &e).await,
    };
    let result = relay_response(session, ctx, state, resp).await;
    conn.close().await;
    result.map(|()| true)
}

async fn relay_response(
    session: &mut Session,
    ctx: &mut RequestCtx,
    state: &AppState,
    resp: http::Response<Incoming>,
) -> Result<()> {
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
    ctx.expect_reply(&content_type, status);
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header("Content-Type", content_type.as_str())?;
    header.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    local::decorate(&mut header, ctx);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    ctx.response_started = true;
    ctx.answered = Some(status);
    let mut body = resp.into_body();
    stream_body(session, ctx, &mut body, state.config.pool.read_timeout).await
}

async fn stream_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: &mut Incoming,
    read_timeout: std::time::Duration,
) -> Result<()> {
    loop {
        match relay_conn::next_chunk(body, read_timeout).await {
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
                session
                    .write_response_body(Some(chunk), false)
                    .await
                    .map_err(|e| e.into_down())?;
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
                return session
                    .write_response_body(Some(rest), true)
                    .await
                    .map_err(|e| e.into_down());
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
) -> Result<(http::Response<Incoming>, Conn), GatewayError> {
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
        let slot = acquire(ctx, state, retry_after).await?;
        ctx.tried.push(slot.instance.index);
        let Some(addr) = **slot.instance.addr.load() else {
            return Err(GatewayError::bad_gateway(format!(
                "{} has no resolved address yet",
                slot.instance.url.base
            )));
        };
        let out = Outgoing {
            addr,
            authority: &slot.instance.url.authority,
            path: &path,
            headers: upstream_headers(ctx),
            body: body.clone(),
            connect_timeout: state.config.pool.connect_timeout,
        };
        match relay_conn::send(out).await {
            Ok(sent) => {
                ctx.slot = Some(slot);
                return Ok(sent);
            }
            Err(e) if e.connect && ctx.retries < state.config.pool.retries => {
                state.pool.report_connect_failure(&slot.instance);
                ctx.retries += 1;
                state.metrics.retries.inc();
            }
            Err(e) => {
                if e.connect {
                    state.pool.report_connect_failure(&slot.instance);
                }
                return Err(GatewayError::bad_gateway(e.message));
            }
        }
    }
}

async fn acquire(
    ctx: &mut RequestCtx,
    state: &AppState,
    retry_after: u64,
) -> Result<SlotGuard, GatewayError> {
    let model = ctx.model.as_ref().map(|m| m.normalized.clone());
    match state
        .pool
        .acquire(
            model.as_deref(),
            &ctx.tried,
            super::upstream::requester(ctx),
            super::upstream::hint(ctx),
        )
        .await
    {
        Ok(slot) => {
            super::upstream::note_choice(state, model.as_deref(), &slot);
            Ok(slot)
        }
        Err(SelectError::ModelNotFound(_)) => {
            let asked = ctx
                .model
                .as_ref()
                .map(|m| m.model.clone())
                .unwrap_or_default();
            Err(GatewayError::model_not_found(&asked))
        }
        Err(e) => Err(e.into_gateway_error(retry_after)),
    }
}

/// The request id and the caller's identity, as the main path sends them.
fn upstream_headers(ctx: &RequestCtx) -> Vec<(&'static str, String)> {
    let mut headers = vec![("X-Request-Id", ctx.request_id.clone())];
    if let Some(id) = &ctx.identity {
        headers.push(("X-Corral-Org", id.org.clone()));
        headers.push(("X-Corral-User", id.user.clone()));
        if !id.roles.is_empty() {
            headers.push(("X-Corral-Role", id.roles.join(",")));
        }
    }
    headers
}
