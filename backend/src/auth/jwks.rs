//! The identity provider's key set (`JWKS_URL`): fetched on first use and on a timer, and
//! refetched (at most once per [`MIN_REFETCH`]) when a token names a `kid` not in the set, so
//! a key rotation at the provider is picked up without a restart and a flood of bogus `kid`s
//! cannot turn into a flood of fetches.

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

const REFRESH: Duration = Duration::from_secs(300);
const MIN_REFETCH: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

struct Key {
    kid: Option<String>,
    /// The JWK's `alg` when it names one (then the only algorithm it verifies), otherwise
    /// every algorithm of its key type.
    algorithms: Vec<Algorithm>,
    decoding: DecodingKey,
}

struct State {
    keys: Arc<Vec<Key>>,
    fetched_at: Option<Instant>,
}

pub(super) struct Jwks {
    url: String,
    client: reqwest::Client,
    state: Mutex<State>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub(super) fn new(url: &str) -> Result<Jwks, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("JWKS_URL={url}: {e}"))?;
        Ok(Jwks {
            url: url.to_owned(),
            client,
            state: Mutex::new(State {
                keys: Arc::new(Vec::new()),
                fetched_at: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn snapshot(&self) -> (Arc<Vec<Key>>, Option<Instant>) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (Arc::clone(&state.keys), state.fetched_at)
    }

    /// The keys that may verify a token with this `kid` and `alg`, fetching the set when it
    /// has never been fetched or does not know the `kid` (rate limited).
    pub(super) async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
        let (keys, fetched_at) = self.snapshot();
        let known = keys
            .iter()
            .any(|k| kid.is_none() || k.kid.as_deref() == kid);
        let stale = fetched_at.is_none_or(|t| t.elapsed() >= MIN_REFETCH);
        let keys = if !known && stale {
            self.fetch().await;
            self.snapshot().0
        } else {
            keys
        };
        keys.iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.algorithms.contains(&alg))
            .map(|k| k.decoding.clone())
            .collect()
    }

    async fn fetch(&self) {
        let _one = self.fetching.lock().await;
        match self.download().await {
            Ok(keys) => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
            }
            Err(e) => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                // Keep the keys we had; wait MIN_REFETCH before trying again.
                state.fetched_at = Some(Instant::now());
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed");
            }
        }
    }

    async fn download(&self) -> Result<Vec<Key>, String> {
        let resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let doc: Value = resp.json().await.map_err(|e| e.to_string())?;
        let items = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        // One unusable key (an encryption key, an unknown type) must not hide the others.
        Ok(items.iter().filter_map(key_of).collect())
    }
}

fn key_of(value: &Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &super::keys::PUBLIC_KEY_ALGORITHMS[..6],
        AlgorithmParameters::EllipticCurve(_) => &[Algorithm::ES256, Algorithm::ES384],
        AlgorithmParameters::OctetKeyPair(_) => &[Algorithm::EdDSA],
        // Symmetric keys never come from a public key set.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let algorithms = match &jwk.common.key_algorithm {
        Some(pinned) => {
            let alg = Algorithm::from_str(&pinned.to_string()).ok()?;
            if !family.contains(&alg) {
                return None;
            }
            vec![alg]
        }
        None => family.to_vec(),
    };
    let decoding = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        decoding,
    })
}

/// Refetches every [`REFRESH`] while the verifier lives.
pub(super) fn spawn_refresh(jwks: Weak<Jwks>) {
    tokio::spawn(async move {
        loop {
            let Some(j) = jwks.upgrade() else {
                return;
            };
            j.fetch().await;
            drop(j);
            tokio::time::sleep(REFRESH).await;
        }
    });
}
