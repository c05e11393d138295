//! The audit log (`audit_log`): who changed what in an org, from where. Rows are written
//! inside the transaction of the change they describe (so a change and its row commit
//! together), and read back newest first, scoped by org in SQL.
//!
//! [`AuditEntry`] is the one shape of a row: the answers of the changes embed it (`audit`)
//! and `GET /api/orgs/{org}/audit` lists it, so a client shows both the same way.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{Row, Transaction};

use super::{DbError, Pool};

/// Who made a change and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The user id, `key:<id>` for an API key, `cli:<unix user>` at a shell.
    pub who: String,
    pub ip: Option<String>,
    /// The actor's own org when it acted on another one (an operator): kept in the row's
    /// `detail` as `actor_org`, so the org's admins see the change came from outside.
    pub from_org: Option<String>,
}

/// One audit row.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// `key.create`, `key.rotate`, `key.revoke`.
    pub action: String,
    /// What was changed (a key id).
    pub target: String,
    /// The action's particulars (e.g. the key's name and role, the grace period).
    pub detail: Value,
    /// The client's address as the gateway saw it; `None` from the command line.
    pub ip: Option<String>,
}

const COLUMNS: &str = "id, at, actor, action, target, detail, ip";

fn entry(row: &Row) -> AuditEntry {
    AuditEntry {
        id: row.get(0),
        at: row.get(1),
        actor: row.get(2),
        action: row.get(3),
        target: row.get(4),
        detail: row.get(5),
        ip: row.get(6),
    }
}

/// Writes a row in `tx` (it takes effect at commit) and returns it.
pub async fn record(
    tx: &Transaction<'_>,
    org: &str,
    actor: &Actor,
    action: &str,
    target: &str,
    mut detail: Value,
) -> Result<AuditEntry, tokio_postgres::Error> {
    if let (Some(from), Value::Object(map)) = (&actor.from_org, &mut detail) {
        map.insert("actor_org".into(), Value::from(from.as_str()));
    }
    let sql = format!(
        "INSERT INTO audit_log (org_id, actor, action, target, detail, ip) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[&org, &actor.who, &action, &target, &detail, &actor.ip],
        )
        .await?;
    Ok(entry(&row))
}

/// One page of `org`'s rows, newest first (`at`, then `id`), `limit` rows after `after`
/// (the `(at, id)` of the previous page's last row).
///
/// Two statements rather than one with `$2 IS NULL OR ...`: a generic plan of the latter
/// cannot use `at` as an index condition, and would read the org's whole log to skip to a
/// late page. `audit_log_org_at (org_id, at DESC)` serves both; rows sharing an `at` are
/// ordered by `id` in a small incremental sort.
pub async fn list(
    pool: &Pool,
    org: &str,
    limit: i64,
    after: Option<(DateTime<Utc>, i64)>,
) -> Result<Vec<AuditEntry>, DbError> {
    let conn = pool.get().await?;
    let rows = match after {
        None => {
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_log WHERE org_id = $1 \
                 ORDER BY at DESC, id DESC LIMIT $2"
            );
            conn.query(&sql, &[&org, &limit]).await?
        }
        Some((at, id)) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_log WHERE org_id = $1 AND at <= $2 \
                 AND (at, id) < ($2, $3) ORDER BY at DESC, id DESC LIMIT $4"
            );
            conn.query(&sql, &[&org, &at, &id, &limit]).await?
        }
    };
    Ok(rows.iter().map(entry).collect())
}
