//! The state every request reads: built once at start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::admission::Shared;
use crate::config::{Config, Target};
use crate::keys::KeyStore;
use crate::limits::{Limiter, Streams};
use crate::metrics::Metrics;
use crate::plugins::auth::Auth;
use crate::plugins::quota::Quota;
use crate::plugins::{self, PluginEnv};
use crate::policy::{load_dir, PolicyStore, QuotaEnv};
use crate::pool::Pool;
use crate::quota::ledger::Ledger;
use crate::quota::QuotaStore;
use crate::redis_conn::LazyRedis;
use crate::routes::{Route, RouteTable};

pub struct AppState {
    pub config: Config,
    pub routes: RouteTable,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    /// The backend's address, resolved at start (never on the request path).
    pub backend_addr: Option<SocketAddr>,
    /// Forwards model requests too large for Pingora to replay (see `proxy::relay`).
    /// `Strict-Transport-Security` for TLS responses, when enabled.
    pub hsts: Option<Arc<str>>,
    pub started: Instant,
    pub policies: Arc<PolicyStore>,
    pub limiter: Arc<Limiter>,
    pub quota_store: Arc<QuotaStore>,
    /// The quota plugin (its refusals and reservations, for the admission after the chain).
    pub quota: Arc<Quota>,
    /// Concurrent streams counted in this process (without Redis, or while it is away).
    pub streams: Arc<Streams>,
    /// Rate limits, stream leases and quotas in Redis, one script per request (with
    /// `REDIS_URL`).
    pub shared: Option<Arc<Shared>>,
    /// The usage ledger in PostgreSQL, when `DATABASE_URL` is set.
    pub ledger: Option<Arc<Ledger>>,
    /// The JWT verifier, for its background JWKS refresh.
    pub verifier: Option<Arc<corral_auth::Verifier>>,
    /// API keys (with `API_KEY_PEPPER` and `DATABASE_URL`).
    pub keys: Option<Arc<KeyStore>>,
    /// Requests in flight and SIGTERM's drain (`/readyz` answers 503 while it runs).
    pub drain: Arc<crate::drain::Drain>,
    /// Checks the admin API's callers (the same JWTs and API keys as every route).
    pub auth: Option<Arc<Auth>>,
    /// Recent traffic and per-org counters, for the console.
    pub activity: crate::activity::Activity,
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
        let quota_env = QuotaEnv {
            soft: config.policies.soft_tokens,
            hard: config.policies.hard_tokens,
        };
        let max_file = config.policies.max_file_bytes;
        let initial =
            load_dir(&config.policies.dir, quota_env, max_file).map_err(|e| e.to_string())?;
        let policies = Arc::new(PolicyStore::new(
            config.policies.dir.clone(),
            quota_env,
            max_file,
            initial,
        ));
        let ledger = match &config.quota.database_url {
            Some(url) => Some(Arc::new(Ledger::new(
                url,
                config.quota.ledger_buffer,
                Arc::clone(&metrics),
            )?)),
            None => None,
        };
        let redis = match config.redis.url.as_deref() {
            Some(url) => Some(Arc::new(LazyRedis::new(url, config.redis.timeout)?)),
            None => None,
        };
        let prefix = config.redis.key_prefix.as_str();
        let quota_store = Arc::new(QuotaStore::new(redis.clone(), prefix, ledger.clone()));
        let limiter = Arc::new(Limiter::new(
            redis.clone(),
            &config.redis,
            Arc::clone(&metrics),
        ));
        let shared = redis.map(|r| Arc::new(Shared::new(r, prefix, config.redis.stream_lease)));
        let keys = key_store(&config, &metrics)?;
        let env = PluginEnv {
            max_body_bytes: config.max_body_bytes,
            cors: config.cors.clone(),
            policies: Arc::clone(&policies),
            limiter: Arc::clone(&limiter),
            streams: Arc::new(Streams::default()),
            shared: shared.clone(),
            queue_timeout: config.pool.queue_timeout,
            prompt_chain: config.pool.balance == crate::config::Balance::CacheAware,
            quota: Arc::new(Quota::new(
                Arc::clone(&quota_store),
                shared.clone(),
                Arc::clone(&limiter),
                config.quota.default_completion_tokens,
                Arc::clone(&metrics),
            )),
            auth: match config.auth.enabled() {
                true => Some(Arc::new(Auth::new(&config.auth, keys.clone())?)),
                false => None,
            },
        };
        if !config.auth.enabled() {
            tracing::warn!("authentication is off: set JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWKS_URL (JWTs), or API_KEY_PEPPER with DATABASE_URL (API keys), to require credentials");
        }
        let routes = config
            .routes
            .iter()
            .map(|rc| {
                let chain = rc
                    .plugins
                    .iter()
                    // Without any key source there is nothing to check tokens against.
                    .filter(|name| *name != "auth" || config.auth.enabled())
                    .map(|name| {
                        plugins::build(name, &env)
                            .ok_or_else(|| format!("unknown plugin \"{name}\""))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Route {
                    config: rc.clone(),
                    chain,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let backend_addr = match &config.backend {
            Some(url) => Some(
                resolve(&url.host, url.port)
                    .map_err(|e| format!("backend url {}: {e}", url.base))?,
            ),
            None => None,
        };
        let needs_pool = config.routes.iter().any(|r| r.target == Target::Ollama);
        if needs_pool && config.pool.instances.is_empty() {
            tracing::warn!("no Ollama instances configured (pool.instances / OLLAMA_BASE_URL): model routes will answer 503");
        }
        let verifier = env.auth.as_ref().and_then(|a| a.verifier.clone());
        let auth = env.auth.clone();
        let policies = env.policies.clone();
        Ok(Self {
            keys,
            ledger,
            quota_store,
            quota: Arc::clone(&env.quota),
            streams: Arc::clone(&env.streams),
            shared,
            verifier,
            policies,
            limiter,
            pool: Arc::new(Pool::new(config.pool.clone(), Arc::clone(&metrics))),
            routes: RouteTable::new(routes),
            metrics,
            backend_addr,
            hsts: config
                .tls
                .as_ref()
                .and_then(|t| t.hsts.as_deref())
                .map(Arc::from),
            started: Instant::now(),
            drain: crate::drain::Drain::new(),
            auth,
            activity: crate::activity::Activity::default(),
            config,
        })
    }
}

/// The API-key store when `API_KEY_PEPPER` is set; keys live in the backend's database, so
/// `DATABASE_URL` is then required.
fn key_store(config: &Config, metrics: &Arc<Metrics>) -> Result<Option<Arc<KeyStore>>, String> {
    let Some(pepper) = config.auth.api_key_pepper.clone() else {
        return Ok(None);
    };
    let Some(url) = &config.quota.database_url else {
        return Err("API_KEY_PEPPER is set but DATABASE_URL is not: API keys are read from the backend's database".into());
    };
    KeyStore::new(&config.auth, pepper, url, Arc::clone(metrics)).map(|k| Some(Arc::new(k)))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}
