//! API keys in PostgreSQL: create, list, rotate, revoke. Every change is written together
//! with its `audit_log` row and announced on `corral_api_keys` (`NOTIFY`, delivered at
//! commit), so every gateway forgets the key at once. Secrets are stored as peppered HMACs
//! only (see `corral_auth::api_key`).

use chrono::{DateTime, Utc};
use corral_auth::api_key::{self, Pepper};
use corral_auth::key_store::CHANGES_CHANNEL;
use serde::Serialize;
use tokio_postgres::Transaction;

use super::audit::{self, Actor, AuditEntry};
use super::{DbError, Pool};

/// What a new key is made of (checked by the API layer).
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub owner_user: Option<String>,
    pub role: Option<String>,
    pub models: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as lists show it: never its secret or hash.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// `crl_<id>_`: what every secret of this key starts with.
    pub prefix: String,
    /// The current secret's last four characters.
    pub last_four: String,
    pub owner_user: Option<String>,
    pub role: Option<String>,
    pub models: Option<Vec<String>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When the previous secret stops working, while a rotation's grace period runs.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// `active`, `expired` or `revoked`.
    pub state: &'static str,
}

/// A new secret, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct Minted {
    #[serde(flatten)]
    pub view: KeyView,
    /// The whole key, `crl_<id>_<secret>`.
    pub key: String,
    /// The audit row this change wrote (the shape `GET /api/orgs/{org}/audit` lists).
    pub audit: AuditEntry,
}

#[derive(Debug)]
pub enum KeysError {
    Db(DbError),
    NotFound,
    NameTaken(String),
    Random(String),
}

impl From<DbError> for KeysError {
    fn from(e: DbError) -> Self {
        KeysError::Db(e)
    }
}

impl From<tokio_postgres::Error> for KeysError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return KeysError::NameTaken(String::new());
        }
        KeysError::Db(DbError::from(e))
    }
}

const VIEW_COLUMNS: &str = "k.id, k.name, k.owner_user, k.role, k.models, k.created_by, \
     k.created_at, k.expires_at, k.last_used_at, k.revoked_at, \
     (SELECT s.last_four FROM api_key_secrets s WHERE s.key_id = k.id \
        ORDER BY s.valid_until IS NULL DESC, s.created_at DESC LIMIT 1), \
     (SELECT max(s.valid_until) FROM api_key_secrets s WHERE s.key_id = k.id \
        AND s.valid_until > now() AND k.revoked_at IS NULL)";

fn view(row: &tokio_postgres::Row) -> KeyView {
    let id: String = row.get(0);
    let expires_at: Option<DateTime<Utc>> = row.get(7);
    let revoked_at: Option<DateTime<Utc>> = row.get(9);
    let state = match (revoked_at, expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(at)) if at <= Utc::now() => "expired",
        _ => "active",
    };
    KeyView {
        prefix: format!("{}{id}_", api_key::PREFIX),
        id,
        name: row.get(1),
        owner_user: row.get(2),
        role: row.get(3),
        models: row.get(4),
        created_by: row.get(5),
        created_at: row.get(6),
        expires_at,
        last_used_at: row.get(8),
        revoked_at,
        last_four: row.get::<_, Option<String>>(10).unwrap_or_default(),
        previous_valid_until: row.get(11),
        state,
    }
}

/// Creates a key; its name must be new in the org (rotate is the way to a new secret).
pub async fn create(
    pool: &Pool,
    pepper: &Pepper,
    org: &str,
    new: &NewKey,
    actor: &Actor,
) -> Result<Minted, KeysError> {
    let id = api_key::generate_id().map_err(KeysError::Random)?;
    let secret = api_key::generate_secret().map_err(KeysError::Random)?;
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    let inserted = tx
        .execute(
            "INSERT INTO api_keys (id, org_id, name, owner_user, role, models, expires_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (org_id, name) DO NOTHING",
            &[&id, &org, &new.name, &new.owner_user, &new.role, &new.models, &new.expires_at, &actor.who],
        )
        .await?;
    if inserted == 0 {
        return Err(KeysError::NameTaken(new.name.clone()));
    }
    add_secret(&tx, pepper, &id, &secret).await?;
    let audit = audit(
        &tx,
        org,
        actor,
        "key.create",
        &id,
        serde_json::json!({"name": new.name, "role": new.role}),
    )
    .await?;
    let view = load_view(&tx, org, &id).await?.ok_or(KeysError::NotFound)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Minted {
        view,
        key: api_key::format_key(&id, &secret),
        audit,
    })
}

/// A new secret for the same key; the old ones keep working for `grace_s` seconds (0: not at
/// all). Revoked keys cannot be rotated.
pub async fn rotate(
    pool: &Pool,
    pepper: &Pepper,
    org: &str,
    id: &str,
    grace_s: i64,
    actor: &Actor,
) -> Result<(Minted, Option<DateTime<Utc>>), KeysError> {
    let secret = api_key::generate_secret().map_err(KeysError::Random)?;
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    let found = tx
        .query_opt(
            "SELECT name FROM api_keys WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL FOR UPDATE",
            &[&id, &org],
        )
        .await?;
    let Some(found) = found else {
        return Err(KeysError::NotFound);
    };
    let name: String = found.get(0);
    // Secrets still valid now end with the grace period (never later than they would have).
    let until: Option<DateTime<Utc>> = tx
        .query_one(
            "WITH ended AS ( \
                UPDATE api_key_secrets \
                SET valid_until = LEAST(COALESCE(valid_until, 'infinity'), now() + make_interval(secs => $2)) \
                WHERE key_id = $1 AND (valid_until IS NULL OR valid_until > now()) \
                RETURNING valid_until) \
             SELECT max(valid_until) FROM ended",
            &[&id, &(grace_s as f64)],
        )
        .await?
        .get(0);
    add_secret(&tx, pepper, id, &secret).await?;
    let audit = audit(
        &tx,
        org,
        actor,
        "key.rotate",
        id,
        serde_json::json!({"name": name, "grace_s": grace_s}),
    )
    .await?;
    let view = load_view(&tx, org, id).await?.ok_or(KeysError::NotFound)?;
    tx.commit().await.map_err(DbError::from)?;
    let minted = Minted {
        view,
        key: api_key::format_key(id, &secret),
        audit,
    };
    Ok((minted, until))
}

/// Revokes a key and every secret of it at once. Revoking a revoked key changes nothing.
pub async fn revoke(pool: &Pool, org: &str, id: &str, actor: &Actor) -> Result<(), KeysError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    let row = tx
        .query_opt(
            "SELECT revoked_at IS NOT NULL, name FROM api_keys WHERE id = $1 AND org_id = $2 FOR UPDATE",
            &[&id, &org],
        )
        .await?;
    let Some(row) = row else {
        return Err(KeysError::NotFound);
    };
    if row.get::<_, bool>(0) {
        return Ok(());
    }
    tx.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
        &[&id],
    )
    .await?;
    tx.execute(
        "UPDATE api_key_secrets SET valid_until = now() \
         WHERE key_id = $1 AND (valid_until IS NULL OR valid_until > now())",
        &[&id],
    )
    .await?;
    let name: String = row.get(1);
    audit(
        &tx,
        org,
        actor,
        "key.revoke",
        id,
        serde_json::json!({"name": name}),
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

/// One page of an org's keys, newest first; `after` is the last id of the previous page.
pub async fn list(
    pool: &Pool,
    org: &str,
    limit: i64,
    after: Option<(DateTime<Utc>, String)>,
) -> Result<Vec<KeyView>, KeysError> {
    let conn = pool.get().await?;
    let (at, id) = match &after {
        Some((at, id)) => (Some(*at), Some(id.clone())),
        None => (None, None),
    };
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM api_keys k WHERE k.org_id = $1 \
         AND ($2::timestamptz IS NULL OR (k.created_at, k.id) < ($2, $3)) \
         ORDER BY k.created_at DESC, k.id DESC LIMIT $4"
    );
    let rows = conn.query(&sql, &[&org, &at, &id, &limit]).await?;
    Ok(rows.iter().map(view).collect())
}

/// The key named `name` in `org`, for the command line.
pub async fn find_by_name(
    pool: &Pool,
    org: &str,
    name: &str,
) -> Result<Option<KeyView>, KeysError> {
    let conn = pool.get().await?;
    let sql = format!("SELECT {VIEW_COLUMNS} FROM api_keys k WHERE k.org_id = $1 AND k.name = $2");
    Ok(conn
        .query_opt(&sql, &[&org, &name])
        .await?
        .as_ref()
        .map(view))
}

async fn load_view(
    tx: &Transaction<'_>,
    org: &str,
    id: &str,
) -> Result<Option<KeyView>, KeysError> {
    let sql = format!("SELECT {VIEW_COLUMNS} FROM api_keys k WHERE k.id = $1 AND k.org_id = $2");
    Ok(tx.query_opt(&sql, &[&id, &org]).await?.as_ref().map(view))
}

async fn add_secret(
    tx: &Transaction<'_>,
    pepper: &Pepper,
    id: &str,
    secret: &str,
) -> Result<(), KeysError> {
    tx.execute(
        "INSERT INTO api_key_secrets (key_id, hash, last_four) VALUES ($1, $2, $3)",
        &[&id, &pepper.hash(secret), &api_key::last_four(secret)],
    )
    .await?;
    Ok(())
}

/// Writes the audit row and the announcement every gateway listens for (both take effect at
/// commit); returns the row, which the API answer shows.
async fn audit(
    tx: &Transaction<'_>,
    org: &str,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<AuditEntry, KeysError> {
    let entry = audit::record(tx, org, actor, action, target, detail).await?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &target])
        .await?;
    Ok(entry)
}

/// The role of `org`'s key `id` (`Ok(None)`: no such key; `Ok(Some(None))`: a key without a
/// role). Read before a rotation, whose new secret carries this role.
pub async fn role_of(
    pool: &Pool,
    org: &str,
    id: &str,
) -> Result<Option<Option<String>>, KeysError> {
    let conn = pool.get().await?;
    let row = conn
        .query_opt(
            "SELECT role FROM api_keys WHERE id = $1 AND org_id = $2",
            &[&id, &org],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
