//! The plugin layer: each route runs an ordered chain of small plugins. A plugin lets the
//! request go on (possibly noting something in the context) or answers it itself. No plugin
//! knows another; adding one is a file here plus a line in [`build`].

pub mod auth;
mod body_limit;
mod cors;
mod model_access;
mod model_body;
mod model_guard;
pub mod quota;
pub mod rate_limit;
mod request_id;

use std::sync::Arc;

use async_trait::async_trait;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::context::RequestCtx;
use crate::errors::GatewayError;

/// What a plugin decided about a request.
#[derive(Debug)]
pub enum Flow {
    Continue,
    /// Stop here and answer with this error.
    Respond(GatewayError),
    /// Stop here and answer with this (non-error) response, e.g. a CORS preflight.
    Reply(LocalReply),
}

/// A response a plugin gives instead of the upstream.
#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

#[async_trait]
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// Runs before an upstream is chosen, in chain order.
    async fn on_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow>;

    /// Runs on every response header going to the client (upstream or gateway-made).
    fn on_response(&self, _header: &mut ResponseHeader, _ctx: &RequestCtx) {}
}

/// What plugins are built from.
pub struct PluginEnv {
    pub max_body_bytes: usize,
    pub cors: crate::config::CorsConfig,
    /// Shared by every route's `auth` (one JWKS cache); `None` when auth is off.
    pub auth: Option<Arc<auth::Auth>>,
    pub policies: Arc<crate::policy::PolicyStore>,
    pub limiter: Arc<crate::limits::Limiter>,
    pub streams: Arc<crate::limits::Streams>,
    pub shared: Option<Arc<crate::admission::Shared>>,
    pub queue_timeout: std::time::Duration,
    pub quota: Arc<quota::Quota>,
    /// Cache-aware routing: `model_body` hashes the prompt as it parses the body.
    pub prompt_chain: bool,
}

/// Every plugin name a route may list.
pub const KNOWN: &[&str] = &[
    "request_id",
    "cors",
    "auth",
    "rate_limit",
    "body_limit",
    "model_guard",
    "model_body",
    "model_access",
    "quota",
];

/// Builds the plugin called `name`.
pub fn build(name: &str, env: &PluginEnv) -> Option<Arc<dyn Plugin>> {
    Some(match name {
        "request_id" => Arc::new(request_id::RequestId),
        "body_limit" => Arc::new(body_limit::BodyLimit {
            max: env.max_body_bytes,
        }),
        "model_guard" => Arc::new(model_guard::ModelGuard),
        "auth" => env.auth.clone()?,
        "rate_limit" => Arc::new(rate_limit::RateLimit {
            limiter: Arc::clone(&env.limiter),
            streams: Arc::clone(&env.streams),
            queue_timeout: env.queue_timeout,
            shared: env.shared.clone(),
        }),
        "model_access" => Arc::new(model_access::ModelAccess),
        "quota" => env.quota.clone(),
        "cors" => Arc::new(cors::Cors {
            config: env.cors.clone(),
        }),
        "model_body" => Arc::new(model_body::ModelBody {
            max: env.max_body_bytes,
            prompt_chain: env.prompt_chain,
        }),
        _ => return None,
    })
}
