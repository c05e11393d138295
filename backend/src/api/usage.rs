//! `GET /api/orgs/{org}/usage?period=`: an org's tokens for a period, by model and by user,
//! with its soft and hard limits. For admins of that org and operators only (`api::access`):
//! for anyone else another org's report is 404 (its existence is not confirmed), and a
//! non-admin of this org gets 403.
//!
//! `period` is `YYYY-MM` (a calendar month, UTC; the default is the current month) or
//! `day:YYYY-MM-DD` (one UTC day), matching the gateway's quota periods.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde_json::{json, Value};

use super::access;
use super::errors::{ApiError, ApiResult};
use super::extract::Caller;
use super::AppState;
use crate::db::usage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub kind: &'static str,
    /// As the client writes it (`2025-03`, `day:2025-03-07`).
    pub label: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Parses `period`; `today` supplies the default (the current month).
pub fn parse_period(text: Option<&str>, today: NaiveDate) -> Result<Period, ApiError> {
    let bad = || ApiError::field("period", "expected YYYY-MM or day:YYYY-MM-DD");
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    match text {
        Some(t) if t.starts_with("day:") => {
            let day = NaiveDate::parse_from_str(&t[4..], "%Y-%m-%d").map_err(|_| bad())?;
            let next = day.succ_opt().ok_or_else(bad)?;
            Ok(Period {
                kind: "day",
                label: format!("day:{}", day.format("%Y-%m-%d")),
                start: midnight(day).ok_or_else(bad)?,
                end: midnight(next).ok_or_else(bad)?,
            })
        }
        _ => {
            let first = match text {
                Some(t) => NaiveDate::parse_from_str(&format!("{t}-01"), "%Y-%m-%d")
                    .ok()
                    .filter(|_| t.len() == 7)
                    .ok_or_else(bad)?,
                None => today.with_day(1).ok_or_else(bad)?,
            };
            let next = first.checked_add_months(Months::new(1)).ok_or_else(bad)?;
            Ok(Period {
                kind: "month",
                label: first.format("%Y-%m").to_string(),
                start: midnight(first).ok_or_else(bad)?,
                end: midnight(next).ok_or_else(bad)?,
            })
        }
    }
}

pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    access::administer(
        &caller,
        &org,
        "the usage report is for the org's admins and operators",
    )?;
    let period = parse_period(
        query.get("period").map(String::as_str),
        Utc::now().date_naive(),
    )?;
    let r = usage::report(&state.pool, &org, period.start, period.end).await?;
    let (soft, hard) = (state.config.soft_token_limit, state.config.hard_token_limit);
    let used = r.total.total_tokens.max(0) as u64;
    Ok(Json(json!({
        "org": org,
        "period": {
            "kind": period.kind,
            "label": period.label,
            "start": period.start,
            "end": period.end,
        },
        "total": r.total,
        "by_model": r.by_model,
        "by_user": r.by_user,
        "by_key": r.by_key,
        "limits": {
            "soft_tokens": soft,
            "hard_tokens": hard,
            "soft_exceeded": soft.map(|s| used > s),
            "hard_exceeded": hard.map(|h| h > 0 && used >= h),
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn months_and_days() {
        let p = parse_period(Some("2025-12"), day("2025-01-01")).expect("month");
        assert_eq!(p.start.to_rfc3339(), "2025-12-01T00:00:00+00:00");
        assert_eq!(p.end.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        let p = parse_period(Some("day:2024-02-29"), day("2025-01-01")).expect("day");
        assert_eq!(p.end.to_rfc3339(), "2024-03-01T00:00:00+00:00");
        let p = parse_period(None, day("2025-03-17")).expect("default");
        assert_eq!(p.label, "2025-03");
    }

    #[test]
    fn bad_periods_name_the_field() {
        for bad in [
            "2025-13",
            "2025",
            "day:2025-02-30",
            "march",
            "2025-3",
            "day:",
        ] {
            let e = parse_period(Some(bad), day("2025-01-01")).unwrap_err();
            assert!(e.message.starts_with("period:"), "{bad}: {}", e.message);
        }
    }
}
