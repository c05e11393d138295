//! Everything one request accumulates on its way through the gateway.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::pool::SlotGuard;
use crate::routes::{OllamaEndpoint, Route};
use crate::usage::UsageParser;

/// The caller, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub org: String,
    pub roles: Vec<String>,
    /// The API key used, when the caller presented one (its public id and name).
    pub key: Option<KeyRef>,
}

/// The API key a request came with.
#[derive(Debug, Clone)]
pub struct KeyRef {
    pub id: String,
    /// The name policy files give its limits under (`[orgs.<org>.keys.<name>]`).
    pub name: String,
    /// The key's own model patterns, narrower than its org's.
    pub models: Option<crate::policy::ModelRules>,
}

impl PartialEq for KeyRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for KeyRef {}

/// The fields of a model request's JSON body the gateway acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelRequest {
    /// The model as the client named it.
    pub model: String,
    /// The same, normalised (`llama3` → `llama3:latest`), used for routing and metrics.
    pub normalized: String,
    pub stream: bool,
}

/// Per-request state, created by `ProxyHttp::new_ctx` and dropped when the request ends.
/// Dropping it releases the in-flight slot, so no path can leak one.
pub struct RequestCtx {
    pub started: Instant,
    pub request_id: String,
    /// The request came over TLS.
    pub tls: bool,
    /// `Strict-Transport-Security` to send on TLS responses.
    pub hsts: Option<std::sync::Arc<str>>,
    /// The TCP peer, and the client behind trusted proxies.
    pub peer_ip: Option<std::net::IpAddr>,
    pub client_ip: Option<std::net::IpAddr>,
    pub route: Option<Arc<Route>>,
    pub endpoint: Option<OllamaEndpoint>,
    pub model: Option<ModelRequest>,
    /// Who is calling, once a token was verified.
    pub identity: Option<Identity>,
    /// The policy in force when the request started (kept for its whole life).
    pub policy: Option<std::sync::Arc<crate::policy::PolicySet>>,
    /// The caller's limits under that policy, worked out once (see [`RequestCtx::limits`]).
    effective: Option<std::sync::Arc<crate::policy::Effective>>,
    /// `RateLimit-Policy` and `RateLimit` values for the response.
    pub rate_headers: Option<(String, String)>,
    /// A concurrent-stream slot, freed when the request ends.
    pub stream_guard: Option<crate::limits::StreamGuard>,
    /// What the rate-limit and quota plugins left for the one Redis round trip after the
    /// chain (see `admission`).
    pub admission: Option<crate::admission::Pending>,
    /// A concurrent-stream slot held in Redis, freed by the settlement at the end.
    pub lease: Option<crate::admission::Lease>,
    /// The quota reservation to settle when the request ends.
    pub reservation: Option<crate::quota::Reservation>,
    /// `X-Quota-Limit`, `X-Quota-Used` and the soft-limit warning for the response.
    pub quota_headers: Option<(u64, u64, Option<String>)>,
    /// The most completion tokens the upstream was allowed (the client's cap, or the one the
    /// quota wrote): a reply reporting more is clamped to it.
    pub completion_cap: Option<u64>,
    /// The body as rewritten for the upstream (completion cap, usage request).
    pub body_rewrite: Option<Bytes>,
    /// The gateway asked for usage on an OpenAI stream: drop that chunk from the response.
    pub strip_usage: bool,
    pub stripper: Option<crate::usage::UsageStripper>,
    /// The limit that refused the request, for metrics.
    pub metrics_scope: Option<&'static str>,
    /// The request body, read whole before choosing an instance.
    pub body: Option<Bytes>,
    /// Bytes of request body passed upstream so far (for the size limit on streamed bodies).
    pub body_bytes: usize,
    pub slot: Option<SlotGuard>,
    /// Instances already tried for this request (skipped on retry).
    pub tried: Vec<usize>,
    pub retries: usize,
    /// The last instance answered 503 "server busy" before streaming: retry elsewhere.
    pub busy_retry: bool,
    /// Some instance answered "busy" for this request.
    pub saw_busy: bool,
    pub usage: Option<UsageParser>,
    /// Holds back a streamed reply's unfinished line, so a cut stream ends on a whole one.
    pub frames: Option<crate::usage::FrameGate>,
    /// The origin to echo in `Access-Control-Allow-Origin`, when CORS allowed it.
    pub cors_origin: Option<String>,
    /// Set once the upstream response header has been passed to the client.
    pub response_started: bool,
    /// The client's conversation key (`X-Corral-Session`), for cache-aware routing.
    pub conversation: Option<String>,
    /// The prompt's block chain, for cache-aware routing (model requests only).
    pub prompt: Option<std::sync::Arc<crate::pool::prefix::PromptChain>>,
    /// What hashing the prompt took (counted in the routing decision's cost).
    pub prompt_hashing: std::time::Duration,
    /// The prompt's block keys in Redis (with their depths), from the admission.
    pub block_keys: Vec<(String, usize)>,
    /// Where Redis says the prompt's deepest known block went (another replica's choice).
    pub shared_owner: Option<(String, usize)>,
    /// When the first byte of a model reply's body arrived (time to first token).
    pub first_token: Option<std::time::Duration>,
    pub upstream_status: Option<u16>,
    /// An error decided in a phase that cannot answer itself, written by `fail_to_proxy`.
    pub pending_error: Option<crate::errors::GatewayError>,
    /// Status of a response the gateway wrote itself.
    pub answered: Option<u16>,
    /// Counts this request in flight for SIGTERM's drain, until the context is dropped.
    pub flight: Option<crate::drain::Flight>,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            request_id: String::new(),
            tls: false,
            hsts: None,
            peer_ip: None,
            client_ip: None,
            route: None,
            endpoint: None,
            model: None,
            identity: None,
            policy: None,
            effective: None,
            rate_headers: None,
            stream_guard: None,
            admission: None,
            lease: None,
            metrics_scope: None,
            reservation: None,
            quota_headers: None,
            completion_cap: None,
            body_rewrite: None,
            strip_usage: false,
            stripper: None,
            body: None,
            body_bytes: 0,
            slot: None,
            tried: Vec::new(),
            retries: 0,
            busy_retry: false,
            saw_busy: false,
            usage: None,
            frames: None,
            cors_origin: None,
            response_started: false,
            first_token: None,
            conversation: None,
            prompt: None,
            prompt_hashing: std::time::Duration::ZERO,
            shared_owner: None,
            block_keys: Vec::new(),
            upstream_status: None,
            answered: None,
            pending_error: None,
            flight: None,
        }
    }

    /// The instance serving this request, for logs.
    pub fn instance(&self) -> Option<&str> {
        self.slot.as_ref().map(|s| s.instance.url.base.as_str())
    }

    /// The authenticated caller's limits (org limits with the user's overrides), computed on
    /// first use and shared by every plugin and the end of the request.
    pub fn limits(&mut self) -> Option<std::sync::Arc<crate::policy::Effective>> {
        if self.effective.is_none() {
            let (id, policy) = (self.identity.as_ref()?, self.policy.as_ref()?);
            let key = id.key.as_ref().map(|k| k.name.as_str());
            self.effective = Some(std::sync::Arc::new(
                policy.effective(&id.org, &id.user, key),
            ));
        }
        self.effective.clone()
    }

    /// The models the caller may use and see: its own limits' patterns, or the defaults' for
    /// a caller without a token.
    pub fn allowed_models(&mut self) -> Option<crate::policy::ModelRules> {
        if let Some(eff) = self.limits() {
            let key_models = self
                .identity
                .as_ref()
                .and_then(|id| id.key.as_ref())
                .and_then(|k| k.models.as_ref());
            return Some(match key_models {
                Some(narrower) => eff.models.narrowed_by(narrower),
                None => eff.models.clone(),
            });
        }
        self.policy.as_ref().map(|p| p.defaults.models.clone())
    }

    /// Prepares for reading a model reply: the token-count parser its content type calls
    /// for, and for a successful stream, the gate that keeps its lines whole.
    pub fn expect_reply(&mut self, content_type: &str, status: u16) {
        self.usage = UsageParser::for_content_type(content_type);
        if status == 200 {
            self.frames = self
                .usage
                .as_ref()
                .and_then(crate::usage::FrameGate::for_parser);
        }
    }

    pub fn model_name(&self) -> Option<&str> {
        self.model.as_ref().map(|m| m.normalized.as_str())
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
