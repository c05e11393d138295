//! `Idempotency-Key` on the key-minting endpoints (create, rotate): the same key and body
//! within 24 h return the first answer again, secret included, so a client that lost the
//! response can retry without minting a second key; the same key with another body is a 409.
//!
//! Requests with one key are serialised by a PostgreSQL advisory lock, so two racing retries
//! cannot both mint. The stored answer never holds a secret in clear: its `key` field is
//! sealed with ChaCha20-Poly1305 under a key derived from `API_KEY_PEPPER`.

use std::future::Future;

use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use corral_auth::api_key::Pepper;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::errors::ApiError;
use crate::db::{DbError, Pool};

/// Longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;

/// What a replayable request is: its idempotency key and a digest of what it asked.
pub struct Replayable<'a> {
    pub org: &'a str,
    pub key: &'a str,
    pub fingerprint: Vec<u8>,
}

impl<'a> Replayable<'a> {
    /// From the header, when the client sent one; `what` is hashed (method, path and body).
    pub fn from_header(
        org: &'a str,
        header: Option<&'a str>,
        what: &[&[u8]],
    ) -> Result<Option<Self>, ApiError> {
        let Some(key) = header.map(str::trim).filter(|k| !k.is_empty()) else {
            return Ok(None);
        };
        if key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::field(
                "Idempotency-Key",
                format!("at most {MAX_KEY_LEN} printable ASCII characters"),
            ));
        }
        let mut digest = Sha256::new();
        for part in what {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        Ok(Some(Replayable {
            org,
            key,
            fingerprint: digest.finalize().to_vec(),
        }))
    }
}

/// Runs `work` once per idempotency key (within 24 h); retries get its first answer.
pub async fn run<F, Fut>(
    pool: &Pool,
    pepper: &Pepper,
    replay: Option<Replayable<'_>>,
    work: F,
) -> Result<(StatusCode, Value), ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value), ApiError>>,
{
    let Some(replay) = replay else {
        return work().await;
    };
    let conn = pool.get().await?;
    let lock = format!("{}\n{}", replay.org, replay.key);
    conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&lock])
        .await
        .map_err(DbError::from)?;
    let outcome = locked(&conn, pepper, &replay, work).await;
    let _ = conn
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
            &[&lock],
        )
        .await;
    outcome
}

/// The replay, or the work and its record, on the connection that holds the lock.
async fn locked<F, Fut>(
    conn: &tokio_postgres::Client,
    pepper: &Pepper,
    replay: &Replayable<'_>,
    work: F,
) -> Result<(StatusCode, Value), ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value), ApiError>>,
{
    let earlier = conn
        .query_opt(
            "SELECT request_sha, status, response FROM idempotency_keys \
             WHERE org_id = $1 AND key = $2 AND created_at > now() - interval '24 hours'",
            &[&replay.org, &replay.key],
        )
        .await
        .map_err(DbError::from)?;
    if let Some(row) = earlier {
        if row.get::<_, Vec<u8>>(0) != replay.fingerprint {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this Idempotency-Key was used with a different request in the last 24 hours",
            ));
        }
        let status =
            StatusCode::from_u16(row.get::<_, i32>(1) as u16).map_err(|_| ApiError::internal())?;
        let body = unseal(pepper, row.get(2))?;
        return Ok((status, body));
    }
    let (status, body) = work().await?;
    let sealed = seal(pepper, body.clone())?;
    conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'",
        &[],
    )
    .await
    .map_err(DbError::from)?;
    conn.execute(
        "INSERT INTO idempotency_keys (org_id, key, request_sha, status, response) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, key) DO UPDATE \
         SET request_sha = $3, status = $4, response = $5, created_at = now()",
        &[
            &replay.org,
            &replay.key,
            &replay.fingerprint,
            &i32::from(status.as_u16()),
            &sealed,
        ],
    )
    .await
    .map_err(DbError::from)?;
    Ok((status, body))
}

fn cipher(pepper: &Pepper) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&pepper.derive("idempotency replay").into())
}

/// The answer with its `key` (the secret) replaced by `sealed_key`.
fn seal(pepper: &Pepper, mut body: Value) -> Result<Value, ApiError> {
    let Some(key) = body.get("key").and_then(Value::as_str).map(str::to_owned) else {
        return Ok(body);
    };
    let mut nonce = [0u8; 12];
    getrandom::getrandom(&mut nonce).map_err(|_| ApiError::internal())?;
    let sealed = cipher(pepper)
        .encrypt(Nonce::from_slice(&nonce), key.as_bytes())
        .map_err(|_| ApiError::internal())?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&sealed);
    if let Some(obj) = body.as_object_mut() {
        obj.remove("key");
        obj.insert("sealed_key".into(), Value::String(STANDARD.encode(blob)));
    }
    Ok(body)
}

fn unseal(pepper: &Pepper, mut body: Value) -> Result<Value, ApiError> {
    let Some(blob) = body.get("sealed_key").and_then(Value::as_str) else {
        return Ok(body);
    };
    let blob = STANDARD.decode(blob).map_err(|_| ApiError::internal())?;
    if blob.len() < 12 {
        return Err(ApiError::internal());
    }
    let (nonce, sealed) = blob.split_at(12);
    // A pepper changed since the first answer cannot open it: say so rather than 500.
    let key = cipher(pepper)
        .decrypt(Nonce::from_slice(nonce), sealed)
        .map_err(|_| {
            ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "the first answer to this Idempotency-Key can no longer be replayed; use a new key",
            )
        })?;
    let key = String::from_utf8(key).map_err(|_| ApiError::internal())?;
    if let Some(obj) = body.as_object_mut() {
        obj.remove("sealed_key");
        obj.insert("key".into(), Value::String(key));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_answers_hold_no_secret_and_open_again() {
        let pepper = Pepper::new("a-pepper-of-enough-bytes").expect("pepper");
        let body = serde_json::json!({"id": "X", "key": "crl_X_secret"});
        let sealed = seal(&pepper, body.clone()).expect("seal");
        assert!(!sealed.to_string().contains("secret"), "{sealed}");
        assert_eq!(unseal(&pepper, sealed.clone()).expect("unseal"), body);
        let other = Pepper::new("another-pepper-entirely").expect("pepper");
        assert_eq!(
            unseal(&other, sealed).expect_err("wrong pepper").status,
            StatusCode::CONFLICT
        );
    }
}
