//! Conversation rows. Every statement carries the caller's org, and (unless the caller is an
//! org admin) the caller's user id, in its WHERE clause: scoping is part of the query, not a
//! check done afterwards, so no code path can return another org's row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, Pool};
use crate::auth::Identity;

#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub id: Uuid,
    pub org_id: String,
    pub user_id: String,
    pub title: String,
    pub model: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(super) const COLUMNS: &str = "id, org_id, user_id, title, model, created_at, updated_at";

impl Conversation {
    pub(super) fn from_row(row: &Row) -> Conversation {
        Conversation {
            id: row.get(0),
            org_id: row.get(1),
            user_id: row.get(2),
            title: row.get(3),
            model: row.get(4),
            created_at: row.get(5),
            updated_at: row.get(6),
        }
    }
}

/// Where a page of the list starts: strictly after this (updated_at, id), newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListAfter {
    pub updated_at: DateTime<Utc>,
    pub id: Uuid,
}

pub async fn create(
    pool: &Pool,
    who: &Identity,
    title: &str,
    model: &str,
) -> Result<Conversation, DbError> {
    let conn = pool.get().await?;
    let sql = format!(
        "INSERT INTO conversations (id, org_id, user_id, title, model) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    );
    let row = conn
        .query_one(
            &sql,
            &[&Uuid::new_v4(), &who.org, &who.user, &title, &model],
        )
        .await?;
    Ok(Conversation::from_row(&row))
}

/// The conversation when the caller may see it; `None` for unknown ids and other orgs' (or,
/// for a non-admin, other users') ids alike.
pub async fn get(pool: &Pool, who: &Identity, id: Uuid) -> Result<Option<Conversation>, DbError> {
    let conn = pool.get().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM conversations \
         WHERE id = $1 AND org_id = $2 AND (user_id = $3 OR $4)"
    );
    let row = conn
        .query_opt(&sql, &[&id, &who.org, &who.user, &who.admin])
        .await?;
    Ok(row.as_ref().map(Conversation::from_row))
}

/// Newest first, `limit` rows after `after`. An admin lists the org's, anyone else their own;
/// each shape is its own statement so the planner uses the matching index for the keyset.
pub async fn list(
    pool: &Pool,
    who: &Identity,
    limit: i64,
    after: Option<ListAfter>,
) -> Result<Vec<Conversation>, DbError> {
    use tokio_postgres::types::ToSql;
    let conn = pool.get().await?;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&who.org];
    let mut filter = String::from("org_id = $1");
    if !who.admin {
        params.push(&who.user);
        filter.push_str(" AND user_id = $2");
    }
    if let Some(a) = &after {
        let n = params.len();
        params.push(&a.updated_at);
        params.push(&a.id);
        filter.push_str(&format!(" AND (updated_at, id) < (${}, ${})", n + 1, n + 2));
    }
    params.push(&limit);
    let sql = format!(
        "SELECT {COLUMNS} FROM conversations WHERE {filter} \
         ORDER BY updated_at DESC, id DESC LIMIT ${}",
        params.len()
    );
    let rows = conn.query(&sql, &params).await?;
    Ok(rows.iter().map(Conversation::from_row).collect())
}

/// Changes title and/or model; `None` when the caller may not see the conversation.
pub async fn update(
    pool: &Pool,
    who: &Identity,
    id: Uuid,
    title: Option<&str>,
    model: Option<&str>,
) -> Result<Option<Conversation>, DbError> {
    let conn = pool.get().await?;
    let sql = format!(
        "UPDATE conversations SET title = COALESCE($5, title), model = COALESCE($6, model), \
         updated_at = now() \
         WHERE id = $1 AND org_id = $2 AND (user_id = $3 OR $4) RETURNING {COLUMNS}"
    );
    let row = conn
        .query_opt(
            &sql,
            &[&id, &who.org, &who.user, &who.admin, &title, &model],
        )
        .await?;
    Ok(row.as_ref().map(Conversation::from_row))
}

/// Deletes the conversation and (by cascade) its messages; false when not visible.
pub async fn delete(pool: &Pool, who: &Identity, id: Uuid) -> Result<bool, DbError> {
    let conn = pool.get().await?;
    let n = conn
        .execute(
            "DELETE FROM conversations WHERE id = $1 AND org_id = $2 AND (user_id = $3 OR $4)",
            &[&id, &who.org, &who.user, &who.admin],
        )
        .await?;
    Ok(n > 0)
}
