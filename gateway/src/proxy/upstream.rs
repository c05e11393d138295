//! Choosing the upstream peer and shaping what goes to it and comes back.

use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::config::Target;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::pool::{retry_after_secs, Affinity, Hint, Requester, SelectError, SlotGuard};
use crate::routes::OllamaEndpoint;
use crate::state::AppState;

/// Headers a client must never set for itself: the gateway decides identity.
const IDENTITY_HEADERS: &[&str] = &["x-corral-org", "x-corral-user", "x-corral-role"];

/// The host the client asked for: `Host` on HTTP/1, the `:authority` on HTTP/2.
pub fn request_host(session: &Session) -> Option<String> {
    let req = session.req_header();
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri.authority().map(|a| a.to_string()))
}

/// Picks the instance (Ollama) or the backend. Selection errors are stored in the context
/// and answered by `fail_to_proxy`.
pub async fn choose_peer(state: &AppState, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let target = ctx.route.as_ref().map_or(Target::Ollama, |r| r.target());
    let pool = &state.config.pool;
    let addr = match target {
        Target::Backend => match state.backend_addr {
            Some(addr) => addr,
            None => {
                return fail(
                    ctx,
                    GatewayError::unavailable("no backend is configured (BACKEND_URL)", 30),
                )
            }
        },
        Target::Ollama => {
            let model = ctx.model.as_ref().map(|m| m.normalized.clone());
            let slot = match state
                .pool
                .acquire(model.as_deref(), &ctx.tried, requester(ctx), hint(ctx))
                .await
            {
                Ok(slot) => slot,
                Err(SelectError::ModelNotFound(_)) => {
                    let asked = ctx
                        .model
                        .as_ref()
                        .map(|m| m.model.clone())
                        .unwrap_or_default();
                    return fail(ctx, GatewayError::model_not_found(&asked));
                }
                Err(e) => {
                    return fail(
                        ctx,
                        e.into_gateway_error(retry_after_secs(pool.health_interval)),
                    )
                }
            };
            ctx.tried.push(slot.instance.index);
            note_choice(state, model.as_deref(), &slot);
            let addr = **slot.instance.addr.load();
            ctx.slot = Some(slot);
            match addr {
                Some(addr) => addr,
                None => {
                    return Error::e_explain(
                        ErrorType::ConnectError,
                        "instance address not resolved yet",
                    )
                }
            }
        }
    };
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(pool.connect_timeout);
    peer.options.read_timeout = Some(pool.read_timeout);
    peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
    Ok(Box::new(peer))
}

/// What cache-aware routing knows of the request (its prompt, and Redis's owner).
pub fn hint(ctx: &RequestCtx) -> Hint<'_> {
    Hint {
        prompt: ctx.prompt.as_deref(),
        shared: ctx.shared_owner.as_ref().map(|(u, d)| (u.as_str(), *d)),
        hashing: ctx.prompt_hashing,
    }
}

/// Counts how the instance was chosen, and a model load it causes.
pub fn note_choice(state: &AppState, model: Option<&str>, slot: &SlotGuard) {
    let m = &state.metrics;
    m.affinity
        .with_label_values(&[slot.affinity.as_str()])
        .inc();
    if let Affinity::Hit(blocks) = slot.affinity {
        m.affinity_blocks.observe(blocks as f64);
    }
    if model.is_some() && slot.cold {
        m.model_loads
            .with_label_values(&[slot.instance.url.base.as_str()])
            .inc();
    }
}

/// Teaches the pool what the request showed of its model's times (see `Pool::learn`): only
/// an answered request (200), and for a cold one only a streamed first token.
pub fn note_end(state: &AppState, ctx: &RequestCtx) {
    let (Some(slot), Some(model)) = (&ctx.slot, &ctx.model) else {
        return;
    };
    let ok = ctx.upstream_status == Some(200);
    let first_token = ctx
        .first_token
        .filter(|_| model.stream)
        .map(|t| ctx.started + t);
    state.pool.learn(slot, &model.normalized, ok, first_token);
}

/// The caller's org and its scheduling weight, for the fair queue.
pub fn requester(ctx: &RequestCtx) -> Requester<'_> {
    match (&ctx.identity, &ctx.policy) {
        (Some(id), Some(policy)) => Requester {
            org: &id.org,
            weight: policy.org(&id.org).weight,
        },
        _ => Requester { org: "", weight: 1 },
    }
}

fn fail<T>(ctx: &mut RequestCtx, e: GatewayError) -> Result<T> {
    let status = e.status;
    ctx.pending_error = Some(e);
    Error::e_explain(
        ErrorType::HTTPStatus(status),
        "no upstream for this request",
    )
}

/// Shapes the request for the upstream: Ollama wants its own `Host` and no `Origin` (it runs
/// its own CORS check), and must see plain bodies so the gateway can read the counts.
pub fn rewrite_request(req: &mut RequestHeader, ctx: &RequestCtx) -> Result<()> {
    for name in IDENTITY_HEADERS {
        req.remove_header(*name);
    }
    req.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    if let Some(body) = &ctx.body_rewrite {
        req.remove_header(&http::header::TRANSFER_ENCODING);
        req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    }
    if let Some(slot) = &ctx.slot {
        req.insert_header(http::header::HOST, slot.instance.url.authority.as_str())?;
        req.remove_header(&http::header::ORIGIN);
        req.remove_header(&http::header::COOKIE);
        req.remove_header(&http::header::ACCEPT_ENCODING);
    }
    let forward_auth = ctx
        .route
        .as_ref()
        .is_some_and(|r| r.config.forward_authorization);
    if ctx.slot.is_some() || !forward_auth {
        // Credentials stay at the edge: Ollama has no use for them.
        req.remove_header(&http::header::AUTHORIZATION);
        req.remove_header("x-api-key");
    }
    if let Some(id) = &ctx.identity {
        req.insert_header("X-Corral-Org", id.org.as_str())?;
        req.insert_header("X-Corral-User", id.user.as_str())?;
        if !id.roles.is_empty() {
            req.insert_header("X-Corral-Role", id.roles.join(","))?;
        }
    }
    Ok(())
}

/// Notes the status for passive health checks and prepares the token-count parser.
/// Ollama's 503 "server busy" comes before anything streams, so the request is retried on
/// another instance (an error here makes Pingora ask `error_while_proxy`).
pub fn inspect_response(
    state: &AppState,
    session: &Session,
    resp: &ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let status = resp.status.as_u16();
    ctx.upstream_status = Some(status);
    if let Some(slot) = &ctx.slot {
        state.pool.report_status(&slot.instance, status);
    }
    let replayable = !session.as_downstream().retry_buffer_truncated();
    if status == 503
        && ctx.endpoint == Some(OllamaEndpoint::Model)
        && replayable
        && ctx.retries < state.config.pool.retries
    {
        ctx.busy_retry = true;
        ctx.saw_busy = true;
        return Error::e_explain(ErrorType::HTTPStatus(503), "instance busy, trying another");
    }
    if ctx.endpoint == Some(OllamaEndpoint::Model) {
        let content_type = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        ctx.expect_reply(content_type, status);
    }
    Ok(())
}
