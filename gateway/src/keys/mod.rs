//! API keys at the gateway: a presented `crl_<id>_<secret>` resolved against the backend's
//! tables through a cache, so a warm key costs no more than a JWT check.
//!
//! - A positive entry lives at most `auth.key_cache_s`; every change made by the backend is
//!   announced (`NOTIFY corral_api_keys`) and drops the key here at once (`listen.rs`). While
//!   that channel is down, entries live [`UNLISTENED_TTL`] instead, and `/readyz` says so.
//! - Unknown ids are remembered for [`NEGATIVE_TTL`]; racing requests for one id cause one
//!   lookup (single flight).
//! - While the database is away, cached keys keep working until their entry is
//!   `auth.key_stale_s` old; an unknown key gets 503 `auth_unavailable`, never a false 401 or
//!   a false accept.
//! - Failed checks are counted per client IP (`failures.rs`); `last_used_at` is written in
//!   batches off the request path (`last_used.rs`).

mod failures;
mod last_used;
mod listen;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bb8_postgres::PostgresConnectionManager;
use corral_auth::api_key::{self, Pepper};
use corral_auth::key_store::{self, KeyIdentity, KeyRecord, KeyRefusal};
use tokio_postgres::NoTls;

pub use last_used::LastUsedWriter;
pub use listen::ChangeListener;

use crate::config::AuthConfig;
use crate::metrics::Metrics;
use crate::policy::ModelRules;

/// How long an unknown id is remembered (a key created since is announced, and dropped).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Entry lifetime while the change channel is down: revocations then reach this gateway
/// within this time.
pub const UNLISTENED_TTL: Duration = Duration::from_secs(1);

/// After a failed lookup, how long the database counts as away (stale entries are served
/// without asking it).
const AWAY_FOR: Duration = Duration::from_secs(5);

type Pool = bb8::Pool<PostgresConnectionManager<NoTls>>;

/// Why a key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFailure {
    /// 401 with this reason.
    Refused(&'static str),
    /// 429: this client failed too often this minute.
    Blocked,
    /// 503 `auth_unavailable`: the database cannot say, and the key is not cached.
    Unavailable,
}

/// A key as cached: its record, and its own model patterns compiled once rather than on
/// every request.
pub struct CachedKey {
    record: KeyRecord,
    models: Option<ModelRules>,
}

impl CachedKey {
    fn new(record: KeyRecord) -> Self {
        // Patterns were checked when the key was made; any that no longer compile allow nothing.
        let models = record
            .models
            .clone()
            .map(|p| ModelRules::new(p).unwrap_or_else(|_| ModelRules::none()));
        Self { record, models }
    }
}

/// Who a valid key says is calling, and the models it narrows the org's to.
pub type Resolved = (KeyIdentity, Option<ModelRules>);

struct Entry {
    record: Option<Arc<CachedKey>>,
    loaded: Instant,
}

pub struct KeyStore {
    pool: Pool,
    pub(crate) database_url: String,
    pepper: Pepper,
    cache_ttl: Duration,
    stale: Duration,
    cache: Mutex<HashMap<String, Entry>>,
    /// One lock per id being looked up: racing requests wait for the first one's answer.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The change channel is listening (set by `listen.rs`).
    pub(crate) listening: AtomicBool,
    /// When a lookup last failed: while the database is known to be away, keys with a stale
    /// entry are served from it at once instead of waiting for a connection timeout each.
    last_failure: Mutex<Option<Instant>>,
    failures: failures::Failures,
    pub(crate) used: last_used::Pending,
    metrics: Arc<Metrics>,
}

impl KeyStore {
    pub fn new(
        config: &AuthConfig,
        pepper: Pepper,
        database_url: &str,
        metrics: Arc<Metrics>,
    ) -> Result<KeyStore, String> {
        let pg: tokio_postgres::Config = database_url
            .parse()
            .map_err(|e| format!("DATABASE_URL is not valid: {e}"))?;
        let manager = PostgresConnectionManager::new(pg, NoTls);
        let pool = bb8::Pool::builder()
            .max_size(4)
            .connection_timeout(Duration::from_secs(2))
            .retry_connection(false)
            // No reaper task: the pool is built before the runtime starts.
            .max_lifetime(None)
            .idle_timeout(None)
            .build_unchecked(manager);
        Ok(KeyStore {
            pool,
            database_url: database_url.to_string(),
            pepper,
            cache_ttl: config.key_cache,
            stale: config.key_stale,
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(false),
            last_failure: Mutex::new(None),
            failures: failures::Failures::new(config.max_failures_per_minute),
            used: last_used::Pending::default(),
            metrics,
        })
    }

    /// Resolves a presented key to who is calling.
    pub async fn resolve(&self, key: &str, ip: Option<IpAddr>) -> Result<Resolved, KeyFailure> {
        if ip.is_some_and(|ip| self.failures.blocked(ip)) {
            self.count("blocked");
            return Err(KeyFailure::Blocked);
        }
        let result = self.check(key).await;
        match &result {
            Ok((id, _)) => {
                self.count("ok");
                self.used.mark(&id.key_id);
            }
            Err(KeyFailure::Refused(reason)) => {
                self.count(reason_label(reason));
                if let Some(ip) = ip {
                    self.failures.record(ip);
                }
            }
            Err(_) => self.count("unavailable"),
        }
        result
    }

    async fn check(&self, key: &str) -> Result<Resolved, KeyFailure> {
        let parts = api_key::parse(key).map_err(KeyFailure::Refused)?;
        let cached = self.record(parts.id).await?;
        let record = cached.as_ref().map(|c| &c.record);
        let id = key_store::check(record, &self.pepper, parts.secret, SystemTime::now())
            .map_err(|r| KeyFailure::Refused(r.reason()))?;
        Ok((id, cached.and_then(|c| c.models.clone())))
    }

    /// The key's record: from the cache when fresh, else from the database (one lookup per
    /// id however many requests race), else a stale entry while the database is away.
    async fn record(&self, id: &str) -> Result<Option<Arc<CachedKey>>, KeyFailure> {
        if let Some(fresh) = self.cached(id, false) {
            return Ok(fresh);
        }
        if self.database_away() {
            if let Some(stale) = self.cached(id, true) {
                return Ok(stale);
            }
        }
        let gate = self.gate(id);
        let _turn = gate.lock().await;
        if let Some(fresh) = self.cached(id, false) {
            return Ok(fresh);
        }
        let loaded = self.load(id).await;
        self.release_gate(id);
        match loaded {
            Ok(record) => {
                if let Ok(mut at) = self.last_failure.lock() {
                    *at = None;
                }
                let record = record.map(|r| Arc::new(CachedKey::new(r)));
                self.store(id, record.clone());
                Ok(record)
            }
            Err(e) => {
                if let Ok(mut at) = self.last_failure.lock() {
                    *at = Some(Instant::now());
                }
                tracing::warn!(key_id = id, error = %e, "API key lookup failed");
                self.cached(id, true)
                    .flatten()
                    .map(Some)
                    .ok_or(KeyFailure::Unavailable)
            }
        }
    }

    /// A lookup failed in the last [`AWAY_FOR`].
    fn database_away(&self) -> bool {
        self.last_failure
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < AWAY_FOR)
    }

    async fn load(&self, id: &str) -> Result<Option<KeyRecord>, String> {
        let conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let found = key_store::load(&*conn, id).await.map_err(|e| e.to_string());
        let label = match &found {
            Ok(Some(_)) => "found",
            Ok(None) => "unknown",
            Err(_) => "error",
        };
        self.metrics
            .api_key_lookups
            .with_label_values(&[label])
            .inc();
        found
    }

    /// A cached record: `Some(None)` is a remembered unknown id. `stale` accepts any
    /// positive entry younger than `auth.key_stale_s` (the database is away).
    fn cached(&self, id: &str, stale: bool) -> Option<Option<Arc<CachedKey>>> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(id)?;
        let age = entry.loaded.elapsed();
        let ttl = match (&entry.record, stale) {
            (Some(_), true) => self.stale,
            (None, true) => return None,
            (None, false) => NEGATIVE_TTL,
            (Some(_), false) if self.listening.load(Ordering::Acquire) => self.cache_ttl,
            (Some(_), false) => UNLISTENED_TTL.min(self.cache_ttl),
        };
        (age < ttl).then(|| entry.record.clone())
    }

    fn store(&self, id: &str, record: Option<Arc<CachedKey>>) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                id.to_string(),
                Entry {
                    record,
                    loaded: Instant::now(),
                },
            );
        }
    }

    /// Drops a key announced as changed (or everything, when `None`: the channel was lost
    /// and announcements may have been missed).
    pub(crate) fn forget(&self, id: Option<&str>) {
        if let Ok(mut cache) = self.cache.lock() {
            match id {
                Some(id) => {
                    cache.remove(id);
                }
                None => cache.clear(),
            }
        }
    }

    fn gate(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(inflight.entry(id.to_string()).or_default())
    }

    fn release_gate(&self, id: &str) {
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(id);
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .api_key_checks
            .with_label_values(&[result])
            .inc();
    }

    /// For `/readyz`: whether revocations reach this gateway at once.
    pub fn status(&self) -> serde_json::Value {
        let listening = self.listening.load(Ordering::Acquire);
        serde_json::json!({
            "status": if listening { "ok" } else { "degraded" },
            "change_channel": if listening { "listening" } else { "lost" },
            "note": if listening {
                "revocations reach this gateway at once"
            } else {
                "the change channel is down: cached keys live 1 s, so revocations still reach this gateway within a second"
            },
        })
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

fn reason_label(reason: &str) -> &'static str {
    match reason {
        r if r == KeyRefusal::Revoked.reason() => "revoked",
        r if r == KeyRefusal::Expired.reason() => "expired",
        _ => "invalid",
    }
}
