//! The JWKS cache: the identity provider's keys by `kid`, kept fresh without restarts.
//!
//! - A timer refetches the set every `jwks_refresh`, so rotated keys arrive on their own.
//! - A token naming a `kid` we do not have triggers a refetch (the provider may have just
//!   rotated), but at most once per `jwks_min_refetch`, and concurrent requests share the one
//!   fetch in flight (single-flight): a flood of made-up `kid`s costs the provider one request
//!   per period, and the flood itself only gets "unknown key id".
//! - A failed fetch keeps the keys we had.
//!
//! Readers never wait on a lock: the current set is an `ArcSwap` snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;

use super::jwk::parse_jwks;
use super::keys::VerifyKey;

/// A JWKS fetch gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS bigger than this is refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One fetched key set.
#[derive(Default)]
pub(super) struct KeySet {
    /// Bumped on every successful fetch; tells a waiter that fresh keys arrived meanwhile.
    pub generation: u64,
    by_kid: HashMap<String, Vec<VerifyKey>>,
    /// Keys published without a `kid`.
    unnamed: Vec<VerifyKey>,
}

/// Which keys of a set may verify a token.
pub(super) enum Lookup<'a> {
    /// Keys that fit the token's `kid` (when it has one) and `alg`.
    Keys(Vec<&'a VerifyKey>),
    /// The `kid` is known, but none of its keys allows the token's `alg`.
    WrongAlgorithm,
    /// No key has this `kid` (or, for a token without `kid`, no key allows its `alg`).
    Unknown,
}

impl KeySet {
    fn new(keys: Vec<VerifyKey>, generation: u64) -> Self {
        let mut set = KeySet {
            generation,
            ..KeySet::default()
        };
        for key in keys {
            match &key.kid {
                Some(kid) => set.by_kid.entry(kid.clone()).or_default().push(key),
                None => set.unnamed.push(key),
            }
        }
        set
    }

    pub(super) fn len(&self) -> usize {
        self.unnamed.len() + self.by_kid.values().map(Vec::len).sum::<usize>()
    }

    fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// A token with a `kid` uses exactly the keys of that `kid`. A token without one may use
    /// any key that allows its `alg`, keys published without a `kid` first.
    pub(super) fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => Lookup::Unknown,
                Some(keys) => {
                    let fit: Vec<&VerifyKey> = keys.iter().filter(|k| k.allows(alg)).collect();
                    if fit.is_empty() {
                        Lookup::WrongAlgorithm
                    } else {
                        Lookup::Keys(fit)
                    }
                }
            },
            None => {
                let fit: Vec<&VerifyKey> = self
                    .unnamed
                    .iter()
                    .chain(self.by_kid.values().flatten())
                    .filter(|k| k.allows(alg))
                    .collect();
                if fit.is_empty() {
                    Lookup::Unknown
                } else {
                    Lookup::Keys(fit)
                }
            }
        }
    }
}

/// The keys of `JWKS_URL`.
pub(super) struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: ArcSwap<KeySet>,
    /// Held for the whole of a fetch (single-flight); holds when the last fetch started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
    refresh: Duration,
    /// Fetches attempted (successful or not); for logs and tests.
    attempts: AtomicU64,
}

impl Jwks {
    /// Checks the URL and prepares the HTTP client; fetches nothing yet.
    pub(super) fn new(url: &str, refresh: Duration, min_refetch: Duration) -> Result<Jwks, String> {
        let at = format!("JWKS_URL={url}");
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{at}: {e}"))?;
        match parsed.scheme() {
            "https" => {}
            "http" => {
                let local = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                if !local {
                    tracing::warn!(
                        url,
                        "JWKS_URL is plain http: keys can be replaced in transit; use https"
                    );
                }
            }
            other => return Err(format!("{at}: scheme {other:?} is not http(s)")),
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // Fetches are minutes apart and may run on different runtimes: no idle pool.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("corral-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("{at}: {e}"))?;
        Ok(Jwks {
            url: url.to_owned(),
            client,
            keys: ArcSwap::from_pointee(KeySet::default()),
            fetching: tokio::sync::Mutex::new(None),
            min_refetch,
            refresh,
            attempts: AtomicU64::new(0),
        })
    }

    /// The current key set (lock-free).
    pub(super) fn snapshot(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Fetches attempted so far.
    #[cfg(test)]
    pub(super) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// A token named a key that `seen` (the snapshot it was looked up in) lacks: refetch,
    /// unless a fetch already brought a newer set, or one started less than `min_refetch` ago.
    /// Waits for a fetch in flight rather than starting another. The caller looks again in
    /// [`Jwks::snapshot`] afterwards, whatever happened.
    pub(super) async fn refetch_for_unknown_key(&self, seen: &KeySet) {
        let mut last_start = self.fetching.lock().await;
        if self.keys.load().generation != seen.generation {
            return;
        }
        if last_start.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return;
        }
        *last_start = Some(Instant::now());
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(url = %self.url, error = %e, "JWKS refetch failed; keeping the previous keys");
        }
    }

    /// The timer's refresh: fetch now (sharing a fetch in flight if there is one).
    pub(super) async fn refresh(&self) -> Result<(), String> {
        let generation = self.keys.load().generation;
        let mut last_start = self.fetching.lock().await;
        if self.keys.load().generation != generation {
            return Ok(());
        }
        *last_start = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<(), String> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let body = self.fetch().await?;
        let (keys, skipped) = parse_jwks(&body)?;
        for why in &skipped {
            tracing::debug!(url = %self.url, "JWKS key skipped: {why}");
        }
        if keys.is_empty() {
            return Err(format!(
                "no usable signature key ({} skipped: {})",
                skipped.len(),
                skipped.join("; ")
            ));
        }
        let old = self.keys.load();
        let set = KeySet::new(keys, old.generation + 1);
        if set.kids() != old.kids() || set.len() != old.len() {
            tracing::info!(url = %self.url, kids = ?set.kids(), keys = set.len(), "JWKS keys loaded");
        }
        self.keys.store(Arc::new(set));
        Ok(())
    }

    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(&self.url)
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("body larger than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading body: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("body larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Refreshes the set now and then every `refresh`, until the `Jwks` is dropped. After a
/// failure it retries sooner (`min_refetch`, at least a second, at most `refresh`).
///
/// Runs on the current tokio runtime; called outside one, on a small thread of its own.
pub(super) fn spawn_refresh(jwks: Weak<Jwks>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(refresh_loop(jwks));
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("jwks-refresh".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(refresh_loop(jwks)),
                Err(e) => tracing::warn!(error = %e, "no runtime for the JWKS refresh; keys are fetched on demand only"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the JWKS refresh; keys are fetched on demand only");
    }
}

async fn refresh_loop(jwks: Weak<Jwks>) {
    loop {
        let Some(current) = jwks.upgrade() else {
            return;
        };
        let wait = match current.refresh().await {
            Ok(()) => current.refresh,
            Err(e) => {
                tracing::warn!(url = %current.url, error = %e, "JWKS refresh failed; keeping the previous keys");
                current
                    .min_refetch
                    .max(Duration::from_secs(1))
                    .min(current.refresh)
            }
        };
        drop(current);
        tokio::time::sleep(wait).await;
    }
}
