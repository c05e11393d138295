//! Answers the gateway gives itself: errors decided by plugins, and the pool's merged listings.

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde_json::json;

use crate::context::RequestCtx;
use crate::errors::{error_response, response_header, send, GatewayError};
use crate::plugins::LocalReply;
use crate::pool::{normalize_model, Listing};
use crate::routes::OllamaEndpoint;
use crate::state::AppState;

/// Writes `e` (with the route's response plugins applied). Always `Ok(true)`: answered.
pub async fn respond_error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    e: &GatewayError,
) -> Result<bool> {
    let path = session.req_header().uri.path().to_string();
    let (mut header, body) = error_response(&path, e, &ctx.request_id)?;
    decorate(&mut header, ctx);
    ctx.answered = Some(e.status);
    close_if_body_unread(session);
    send(session, header, body).await?;
    drain_unread_body(session).await;
    Ok(true)
}

/// An HTTP/1.1 answer given before the request body was read says `Connection: close`: what
/// is left of the body (maybe an over-limit one) is drained briefly, not kept alive for.
fn close_if_body_unread(session: &mut Session) {
    if !session.is_http2() && !session.as_downstream_mut().is_body_done() {
        session.set_keepalive(None);
    }
}

/// After an early answer (401, 413, 429...), reads (and drops) what is left of the request
/// body: on HTTP/2 the stream then ends cleanly instead of being reset, and on HTTP/1.1 the
/// socket is not closed with unread data in it, which would reset the connection and lose
/// the answer before the client reads it (nginx's "lingering close"). Bounded in time; a
/// body still arriving after that is cut after all.
async fn drain_unread_body(session: &mut Session) {
    if session.as_downstream_mut().is_body_done() {
        return;
    }

    let drain = session.as_downstream_mut().drain_request_body();
    if tokio::time::timeout(std::time::Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        tracing::debug!("request body still arriving after an early answer; resetting the stream");
    }
}

/// Writes a plugin's reply (no body), with the route's response plugins applied.
pub async fn reply(session: &mut Session, ctx: &mut RequestCtx, reply: LocalReply) -> Result<bool> {
    let mut header = ResponseHeader::build(reply.status, Some(reply.headers.len() + 2))?;
    for (name, value) in &reply.headers {
        header.append_header(*name, value.as_str())?;
    }
    header.insert_header("Content-Length", "0")?;
    header.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    decorate(&mut header, ctx);
    ctx.answered = Some(reply.status);
    close_if_body_unread(session);
    session
        .write_response_header(Box::new(header), true)
        .await?;
    drain_unread_body(session).await;
    Ok(true)
}

/// Runs the route's response hooks on a gateway-made header.
pub fn decorate(header: &mut ResponseHeader, ctx: &RequestCtx) {
    super::edge::add_hsts(header, ctx);
    if let Some(route) = &ctx.route {
        for plugin in &route.chain {
            plugin.on_response(header, ctx);
        }
    }
}

fn entry_name(e: &serde_json::Value) -> Option<&str> {
    e.get("name")
        .or_else(|| e.get("model"))
        .and_then(serde_json::Value::as_str)
}

fn openai_list(entries: Vec<serde_json::Value>) -> serde_json::Value {
    let data: Vec<_> = entries
        .iter()
        .filter_map(crate::pool::openai_entry)
        .collect();
    json!({ "object": "list", "data": data })
}

/// Answers `/api/tags`, `/api/ps` and `/v1/models[/…]` from the pool; `Ok(false)` for
/// everything that goes upstream.
pub async fn answer(session: &mut Session, ctx: &mut RequestCtx, state: &AppState) -> Result<bool> {
    let pool = &state.pool;
    let allowed = ctx.allowed_models();
    let visible = |list: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        list.into_iter()
            .filter(|e| {
                entry_name(e).is_some_and(|n| {
                    allowed
                        .as_ref()
                        .is_none_or(|r| r.allows(&normalize_model(n)))
                })
            })
            .collect()
    };
    let body = match &ctx.endpoint {
        Some(OllamaEndpoint::Tags) => json!({ "models": visible(pool.merged(Listing::Tags)) }),
        Some(OllamaEndpoint::Ps) => json!({ "models": visible(pool.merged(Listing::Ps)) }),
        Some(OllamaEndpoint::V1Models) => openai_list(visible(pool.merged(Listing::Tags))),
        Some(OllamaEndpoint::V1Model(name)) => match pool.openai_model(name).filter(|_| {
            allowed
                .as_ref()
                .is_none_or(|r| r.allows(&normalize_model(name)))
        }) {
            Some(model) => model,
            None => {
                let e = GatewayError::new(
                    404,
                    "model_not_found",
                    format!("model \"{name}\" not found"),
                );
                return respond_error(session, ctx, &e).await;
            }
        },
        _ => return Ok(false),
    };
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut header = response_header(200, "application/json; charset=utf-8", bytes.len(), &[])?;
    header.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    decorate(&mut header, ctx);
    ctx.answered = Some(200);
    send(session, header, bytes).await?;
    Ok(true)
}
