//! Resolving a presented API key against the `api_keys` and `api_key_secrets` tables (owned
//! by the backend's migrations): both binaries check keys the same way. The gateway caches
//! the [`KeyRecord`]s it loads; the backend loads one per request.

use std::time::SystemTime;

use tokio_postgres::GenericClient;

use crate::api_key::Pepper;

/// One secret a key has had; `valid_until` is `None` while it is the current one.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub hash: Vec<u8>,
    pub valid_until: Option<SystemTime>,
}

/// A key as stored, with every secret it has had.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub org: String,
    pub name: String,
    pub owner_user: Option<String>,
    pub role: Option<String>,
    pub models: Option<Vec<String>>,
    pub expires_at: Option<SystemTime>,
    pub revoked_at: Option<SystemTime>,
    pub secrets: Vec<StoredSecret>,
}

/// Who a valid key says is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub key_id: String,
    pub key_name: String,
    pub org: String,
    /// The owner user, or `key:<name>`.
    pub user: String,
    pub roles: Vec<String>,
}

/// Why a key was refused; safe to show (names no secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Malformed, unknown id, or a secret that is not (or no longer) one of the key's.
    Invalid,
    Revoked,
    Expired,
}

impl KeyRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            KeyRefusal::Invalid => "invalid API key",
            KeyRefusal::Revoked => "API key revoked",
            KeyRefusal::Expired => "API key expired",
        }
    }
}

impl KeyRecord {
    /// Checks `secret` against the key's secrets (each in constant time, and every one of
    /// them, so the time taken says nothing about which matched).
    pub fn check(
        &self,
        pepper: &Pepper,
        secret: &str,
        now: SystemTime,
    ) -> Result<KeyIdentity, KeyRefusal> {
        let mut valid = false;
        for s in &self.secrets {
            let matches = pepper.matches(secret, &s.hash);
            valid |= matches && s.valid_until.is_none_or(|until| now < until);
        }
        if self.revoked_at.is_some_and(|at| at <= now) {
            return Err(KeyRefusal::Revoked);
        }
        if !valid {
            return Err(KeyRefusal::Invalid);
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(KeyRefusal::Expired);
        }
        Ok(self.identity())
    }

    fn identity(&self) -> KeyIdentity {
        KeyIdentity {
            key_id: self.id.clone(),
            key_name: self.name.clone(),
            org: self.org.clone(),
            user: self
                .owner_user
                .clone()
                .unwrap_or_else(|| format!("key:{}", self.name)),
            roles: self.role.iter().cloned().collect(),
        }
    }
}

/// Checks a presented secret against the key loaded for its id, or against nothing when no key
/// has that id: then the same HMAC is computed anyway, so the time taken does not tell
/// whether an id exists.
pub fn check(
    record: Option<&KeyRecord>,
    pepper: &Pepper,
    secret: &str,
    now: SystemTime,
) -> Result<KeyIdentity, KeyRefusal> {
    match record {
        Some(record) => record.check(pepper, secret, now),
        None => {
            let _ = pepper.matches(secret, &[0u8; 32]);
            Err(KeyRefusal::Invalid)
        }
    }
}

/// Loads a key and its secrets; `None` when no key has this id.
pub async fn load<C: GenericClient>(
    client: &C,
    id: &str,
) -> Result<Option<KeyRecord>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT k.id, k.org_id, k.name, k.owner_user, k.role, k.models, k.expires_at, \
                    k.revoked_at, s.hash, s.valid_until \
             FROM api_keys k LEFT JOIN api_key_secrets s ON s.key_id = k.id \
             WHERE k.id = $1",
            &[&id],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut record = KeyRecord {
        id: first.get(0),
        org: first.get(1),
        name: first.get(2),
        owner_user: first.get(3),
        role: first.get(4),
        models: first.get(5),
        expires_at: first.get(6),
        revoked_at: first.get(7),
        secrets: Vec::new(),
    };
    for row in &rows {
        if let Some(hash) = row.get::<_, Option<Vec<u8>>>(8) {
            record.secrets.push(StoredSecret {
                hash,
                valid_until: row.get(9),
            });
        }
    }
    Ok(Some(record))
}

/// The channel every change to a key is announced on (`NOTIFY api_keys, '<id>'`), so each
/// gateway forgets that key at once.
pub const CHANGES_CHANNEL: &str = "corral_api_keys";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(pepper: &Pepper) -> KeyRecord {
        KeyRecord {
            id: "ABCDEFGHIJKL".into(),
            org: "acme".into(),
            name: "ci".into(),
            owner_user: None,
            role: Some("admin".into()),
            models: None,
            expires_at: None,
            revoked_at: None,
            secrets: vec![StoredSecret {
                hash: pepper.hash("current"),
                valid_until: None,
            }],
        }
    }

    #[test]
    fn current_rotated_revoked_and_expired_secrets() {
        let pepper = Pepper::new("a-pepper-of-enough-bytes").expect("pepper");
        let now = SystemTime::now();
        let mut r = record(&pepper);
        let id = r.check(&pepper, "current", now).expect("valid");
        assert_eq!(
            (id.user.as_str(), id.roles.clone()),
            ("key:ci", vec!["admin".to_string()])
        );
        assert_eq!(r.check(&pepper, "other", now), Err(KeyRefusal::Invalid));

        r.secrets.push(StoredSecret {
            hash: pepper.hash("old"),
            valid_until: Some(now + Duration::from_secs(60)),
        });
        assert!(
            r.check(&pepper, "old", now).is_ok(),
            "within the grace period"
        );
        assert_eq!(
            r.check(&pepper, "old", now + Duration::from_secs(61)),
            Err(KeyRefusal::Invalid),
            "after it"
        );

        r.expires_at = Some(now);
        assert_eq!(r.check(&pepper, "current", now), Err(KeyRefusal::Expired));
        r.revoked_at = Some(now);
        assert_eq!(r.check(&pepper, "current", now), Err(KeyRefusal::Revoked));
    }
}
