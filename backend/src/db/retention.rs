//! Deleting messages past their retention: the org's `orgs.retention_days` when set, the
//! backend's `retention.days` otherwise.
//!
//! Deletes go in batches (short transactions, no long lock on `messages`), and one backend
//! at a time does it: each batch takes a transaction-level advisory lock with `try`, so
//! replicas running the job at once do not fight over the same rows.

use super::{DbError, Pool};

const LOCK_KEY: i64 = 0x636f_7272_616c_0002;
const BATCH: i64 = 5_000;

/// Deletes every expired message; returns how many (0 when another replica holds the job).
pub async fn delete_expired(pool: &Pool, default_days: u32) -> Result<u64, DbError> {
    let days = i32::try_from(default_days).unwrap_or(i32::MAX);
    let mut total = 0u64;
    loop {
        let mut conn = pool.get().await?;
        let tx = conn.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?
            .get(0);
        if !locked {
            return Ok(total);
        }
        let n = tx
            .execute(
                "DELETE FROM messages WHERE id IN ( \
                     SELECT m.id FROM messages m \
                     JOIN conversations c ON c.id = m.conversation_id \
                     LEFT JOIN orgs o ON o.id = c.org_id \
                     WHERE m.created_at < now() - make_interval(days => COALESCE(o.retention_days, $1)) \
                     LIMIT $2)",
                &[&days, &BATCH],
            )
            .await?;
        tx.commit().await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}
