//! Schema migrations: numbered SQL files in `backend/migrations/` (`V1__initial.sql`...),
//! embedded into the binary at build time, applied in order by refinery, each in its own
//! transaction, and recorded with a checksum in `refinery_schema_history`.
//!
//! Two rules an operator relies on:
//! - an applied migration that was edited since is refused (refinery's divergence check),
//!   so the schema never silently differs from the files that describe it;
//! - two processes migrating at once (several replicas starting) never both apply a file:
//!   the whole run holds a PostgreSQL advisory lock, so the second waits, then finds
//!   nothing to do.

use std::path::Path;

use refinery::error::Kind;
use refinery::{Migration, Runner};

use super::{connect_once, DbError, Pool};
use crate::config::DatabaseConfig;

/// The files of `backend/migrations/`, compiled in (so a deployed binary carries its schema).
mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The advisory lock key that serialises migration runs ("corral" + 1, as an i64).
const LOCK_KEY: i64 = 0x636f_7272_616c_0001;

/// Where the history lives (refinery's default name, stated here because readiness reads it).
const HISTORY_TABLE: &str = "refinery_schema_history";

/// The migrations this backend applies: the embedded ones, or those of `dir` when given.
pub fn migrations(dir: Option<&Path>) -> Result<Vec<Migration>, String> {
    let mut all = match dir {
        None => embedded::migrations::runner().get_migrations().clone(),
        Some(dir) => refinery::load_sql_migrations(dir)
            .map_err(|e| format!("migrations in {}: {e}", dir.display()))?,
    };
    all.sort();
    Ok(all)
}

/// The highest version among `migrations` (what a fully migrated database reports).
pub fn latest_version(migrations: &[Migration]) -> i64 {
    migrations
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// What one run did.
pub struct Outcome {
    /// Names (`V2__message_request_id`) of the migrations this run applied, in order.
    pub applied: Vec<String>,
    pub version: i64,
}

/// Applies pending migrations under the advisory lock. Errors are sentences for operators.
pub async fn run(url: &str, db: &DatabaseConfig) -> Result<Outcome, String> {
    let migrations = migrations(db.migrations_dir.as_deref())?;
    let mut client = connect_once(url, db).await?;
    // Session-level lock: released by the unlock below, or by the server if this process
    // dies mid-run (the session ends), so a crash never leaves it held.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| format!("cannot take the migration lock: {e}"))?;
    let runner = Runner::new(&migrations)
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .set_grouped(false);
    let result = runner.run_async(&mut client).await;
    if let Err(e) = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
    {
        tracing::warn!(error = %e, "could not release the migration lock (the session end will)");
    }
    let report = result.map_err(|e| explain(&e))?;
    let applied = report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect();
    let version = applied_version(&client).await.map_err(|e| e.to_string())?;
    Ok(Outcome { applied, version })
}

/// Refinery's errors, told as what to do about them.
fn explain(e: &refinery::Error) -> String {
    match e.kind() {
        Kind::DivergentVersion(applied, now) => format!(
            "migration {now} differs from the {applied} applied to this database (its checksum \
             in {HISTORY_TABLE} no longer matches): applied migrations must never be edited; \
             restore the original file and put the change in a new migration"
        ),
        Kind::MissingVersion(m) => format!(
            "migration {m} is recorded in {HISTORY_TABLE} but is not among this backend's \
             migrations (an older binary against a newer database?), or a new migration is \
             numbered below one already applied"
        ),
        Kind::Connection(what, source) => {
            format!("migration failed: {what}: {source}")
        }
        _ => format!("migration failed: {e}"),
    }
}

/// The highest version recorded as applied, 0 when nothing was ever applied.
async fn applied_version(client: &tokio_postgres::Client) -> Result<i64, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT COALESCE(max(version), 0)::bigint FROM refinery_schema_history",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// For `/readyz`: the applied version, through the pool.
pub async fn current_version(pool: &Pool) -> Result<i64, DbError> {
    let conn = pool.get().await?;
    Ok(applied_version(&conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_numbered_in_order() {
        let all = migrations(None).expect("embedded");
        assert!(all.len() >= 2);
        let versions: Vec<u32> = all.iter().map(|m| m.version()).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        assert_eq!(versions, sorted);
        assert_eq!(versions[0], 1);
        assert_eq!(
            latest_version(&all),
            i64::from(*versions.last().expect("some"))
        );
    }
}
