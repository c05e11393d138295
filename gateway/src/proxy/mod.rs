//! The Pingora `ProxyHttp` implementation. It stays thin: each phase calls the route's plugin
//! chain or one of the small modules beside it (`local` answers, `upstream` peers and headers,
//! `finish` metrics and access log, `failure` errors).

mod edge;
mod failure;
mod finish;
mod local;
mod relay;
mod relay_conn;
pub(crate) mod upstream;

pub(crate) use local::respond_error;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::Target;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::plugins::Flow;
use crate::routes::{classify, OllamaEndpoint};
use crate::state::AppState;
use crate::usage::UsageStripper;

pub struct Gateway {
    pub state: Arc<AppState>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let mut ctx = RequestCtx::new();
        ctx.flight = Some(self.state.drain.enter());
        ctx
    }

    /// Admin endpoints, route match, the plugin chain, then answers the gateway gives itself
    /// (merged listings). `Ok(true)` means a response was written.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = uuid::Uuid::new_v4().to_string();
        edge::observe(session, ctx, &self.state);
        if let Some(e) = edge::check_header(session, self.state.config.max_header_bytes) {
            return local::respond_error(session, ctx, &e).await;
        }
        ctx.policy = Some(self.state.policies.current());
        ctx.conversation = session
            .req_header()
            .headers
            .get("x-corral-session")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if ctx.tls {
            ctx.hsts = self.state.hsts.clone();
        }
        if edge::redirect_to_https(session, ctx, &self.state).await? {
            return Ok(true);
        }
        if crate::admin::handle(session, ctx, &self.state).await? {
            return Ok(true);
        }
        let path = session.req_header().uri.path().to_string();
        let Some(route) = self
            .state
            .routes
            .find(upstream::request_host(session).as_deref(), &path)
        else {
            let e = GatewayError::not_found(format!("no route for {path}"));
            return local::respond_error(session, ctx, &e).await;
        };
        ctx.route = Some(Arc::clone(&route));
        if session.is_upgrade_req() && !route.config.websocket {
            let e =
                GatewayError::bad_request(format!("WebSocket upgrades are not enabled for {path}"));
            return local::respond_error(session, ctx, &e).await;
        }
        if route.target() == Target::Ollama {
            let endpoint = classify(&path);
            if endpoint == OllamaEndpoint::Unknown {
                let e = GatewayError::not_found(format!("{path} is not an Ollama API path"));
                return local::respond_error(session, ctx, &e).await;
            }
            ctx.endpoint = Some(endpoint);
        }
        for plugin in &route.chain {
            match plugin.on_request(session, ctx).await? {
                Flow::Continue => {}
                Flow::Respond(e) => {
                    tracing::debug!(
                        plugin = plugin.name(),
                        status = e.status,
                        code = e.code,
                        "plugin answered"
                    );
                    return local::respond_error(session, ctx, &e).await;
                }
                Flow::Reply(reply) => return local::reply(session, ctx, reply).await,
            }
        }
        if let Some(pending) = ctx.admission.take() {
            if let Some(e) = crate::admission::admit(&self.state, ctx, pending).await {
                return local::respond_error(session, ctx, &e).await;
            }
        }
        if relay::needed(session, ctx) {
            return relay::forward(session, ctx, &self.state).await;
        }
        local::answer(session, ctx, &self.state).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        upstream::choose_peer(&self.state, ctx).await
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(slot) = ctx.slot.take() {
            self.state.pool.report_connect_failure(&slot.instance);
        }
        let may_retry = ctx
            .route
            .as_ref()
            .is_some_and(|r| r.target() == Target::Ollama);
        if may_retry && ctx.retries < self.state.config.pool.retries {
            ctx.retries += 1;
            self.state.metrics.retries.inc();
            e.set_retry(true);
        }
        e
    }

    /// A failure before any response byte reached the client may be retried on another
    /// instance when the connection was a reused one (the upstream closed it while idle).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if std::mem::take(&mut ctx.busy_retry) {
            ctx.slot.take();
            ctx.retries += 1;
            self.state.metrics.retries.inc();
            e.set_retry(true);
        } else if ctx.response_started || session.as_downstream().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
            if e.retry() {
                ctx.slot.take();
                ctx.retries += 1;
                self.state.metrics.retries.inc();
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream::rewrite_request(req, ctx)?;
        edge::forwarding_headers(req, ctx, &self.state.config.trusted_proxies)
    }

    /// Counts streamed request bodies against the limit (those with a `Content-Length` were
    /// checked before reading).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The quota rewrote the body read up front: send that instead of Pingora's replay.
        if let Some(rewritten) = &ctx.body_rewrite {
            if body.is_some() {
                *body = Some(if end { rewritten.clone() } else { Bytes::new() });
            }
            return Ok(());
        }
        if let Some(b) = body {
            ctx.body_bytes += b.len();
            if ctx.body_bytes > self.state.config.max_body_bytes {
                ctx.pending_error = Some(GatewayError::payload_too_large(
                    self.state.config.max_body_bytes,
                ));
                return Error::e_explain(
                    pingora_error::ErrorType::HTTPStatus(413),
                    "request body over the limit",
                );
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream::inspect_response(&self.state, session, resp, ctx)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.response_started = true;
        if let Some(route) = &ctx.route {
            for plugin in &route.chain {
                plugin.on_response(resp, ctx);
            }
        }
        let _ = resp.insert_header("X-Request-Id", ctx.request_id.as_str());
        edge::add_hsts(resp, ctx);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(parser) = ctx.usage.as_mut() {
            if let Some(b) = body {
                if ctx.first_token.is_none() && !b.is_empty() {
                    ctx.first_token = Some(ctx.started.elapsed());
                }
                parser.feed(b);
            }
            if end {
                parser.finish();
            }
        }
        if ctx.strip_usage && ctx.upstream_status == Some(200) {
            let stripper = ctx.stripper.get_or_insert_with(UsageStripper::default);
            let mut out = body
                .as_ref()
                .map(|b| stripper.push(b))
                .unwrap_or_default()
                .to_vec();
            if end {
                out.extend_from_slice(&stripper.finish());
            }
            *body = Some(Bytes::from(out));
        }
        if let Some(gate) = ctx.frames.as_mut() {
            let mut out = gate.push(body.take().unwrap_or_default());
            if end {
                let rest = gate.finish();
                if !rest.is_empty() {
                    out = [out, rest].concat().into();
                }
            }
            *body = Some(out);
        }
        Ok(None)
    }

    /// Errors the gateway decided on purpose (no instance, 413...) are answered and
    /// access-logged, not logged again as proxy failures.
    /// So are the client's own failures (it went away, sent a malformed body, was too slow):
    /// not errors of the gateway, they are logged at debug and counted in
    /// `corral_client_errors_total`.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        ctx.pending_error.is_some() || e.esource() == &pingora_error::ErrorSource::Downstream
    }

    /// The request as Pingora's own error lines show it, with client values escaped and cut.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .unwrap_or_default();
        format!(
            "{} {}, Host: {}, request_id: {}",
            req.method,
            crate::client_text::Clean(req.uri.path()),
            crate::client_text::Clean(&host),
            crate::client_text::Clean(&ctx.request_id)
        )
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        failure::answer(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // Metrics and the access log first (synchronous), then what needs Redis or the ledger.
        let charge = finish::charge(ctx);
        finish::record(&self.state, session, e, ctx, charge);
        finish::settle_usage(&self.state, ctx, charge);
        upstream::note_end(&self.state, ctx);
        // Frees the instance and stream slots now rather than when Pingora drops the context.
        ctx.slot.take();
        ctx.stream_guard.take();
    }
}
