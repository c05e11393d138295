//! The usage report: one org's tokens for a period, from the `usage_events` ledger the
//! gateway writes. One statement (`GROUPING SETS`) gives the totals, per model and per user,
//! so the three always add up to the same rows.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DbError, Pool};

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Tokens {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub requests: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ByModel {
    pub model: Option<String>,
    #[serde(flatten)]
    pub tokens: Tokens,
}

#[derive(Debug, Clone, Serialize)]
pub struct ByUser {
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub tokens: Tokens,
}

/// Usage by API key (`key_id` null: requests made with a JWT).
#[derive(Debug, Clone, Serialize)]
pub struct ByKey {
    pub key_id: Option<String>,
    #[serde(flatten)]
    pub tokens: Tokens,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub total: Tokens,
    pub by_model: Vec<ByModel>,
    pub by_user: Vec<ByUser>,
    pub by_key: Vec<ByKey>,
}

/// Usage of `org` with `start <= at < end`; models and users sorted by tokens, largest first.
pub async fn report(
    pool: &Pool,
    org: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Report, DbError> {
    let conn = pool.get().await?;
    let rows = conn
        .query(
            "SELECT GROUPING(model) AS gm, GROUPING(user_id) AS gu, model, user_id, \
                 COALESCE(sum(prompt_tokens), 0)::bigint, \
                 COALESCE(sum(completion_tokens), 0)::bigint, \
                 count(*)::bigint, GROUPING(key_id) AS gk, key_id \
             FROM usage_events WHERE org_id = $1 AND at >= $2 AND at < $3 \
             GROUP BY GROUPING SETS ((model), (user_id), (key_id), ())",
            &[&org, &start, &end],
        )
        .await?;
    let mut report = Report::default();
    for row in &rows {
        let (gm, gu, gk): (i32, i32, i32) = (row.get(0), row.get(1), row.get(7));
        let prompt: i64 = row.get(4);
        let completion: i64 = row.get(5);
        let tokens = Tokens {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            requests: row.get(6),
        };
        match (gm, gu, gk) {
            (0, _, _) => report.by_model.push(ByModel {
                model: row.get(2),
                tokens,
            }),
            (_, 0, _) => report.by_user.push(ByUser {
                user_id: row.get(3),
                tokens,
            }),
            (_, _, 0) => report.by_key.push(ByKey {
                key_id: row.get(8),
                tokens,
            }),
            _ => report.total = tokens,
        }
    }
    report.by_model.sort_by(|a, b| {
        b.tokens
            .total_tokens
            .cmp(&a.tokens.total_tokens)
            .then(a.model.cmp(&b.model))
    });
    report.by_user.sort_by(|a, b| {
        b.tokens
            .total_tokens
            .cmp(&a.tokens.total_tokens)
            .then(a.user_id.cmp(&b.user_id))
    });
    report.by_key.sort_by(|a, b| {
        b.tokens
            .total_tokens
            .cmp(&a.tokens.total_tokens)
            .then(a.key_id.cmp(&b.key_id))
    });
    Ok(report)
}
