//! Cursor pagination: `?limit=&cursor=` in, `{"items": [...], "next_cursor": ...}` out.
//!
//! Cursors are opaque (base64url) so clients pass them back rather than build them; inside
//! they hold the keyset position of the last item (`updated_at` and id for conversations, the
//! id for messages, `created_at` and id for keys, `at` and id for audit rows), so pages stay
//! stable while rows are added.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::errors::ApiError;
use crate::db::conversations::ListAfter;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Serialize)]
pub struct Page<T: Serialize> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// `limit` from the query: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
pub fn limit(query: &HashMap<String, String>) -> Result<i64, ApiError> {
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::field("limit", format!("expected a number from 1 to {MAX_LIMIT}"))
            }),
    }
}

/// Builds a page from `limit + 1` fetched rows: the extra row only says there is more.
pub fn page<T: Serialize>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    let next_cursor = if more {
        rows.last().map(cursor_of)
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

fn bad_cursor() -> ApiError {
    ApiError::field("cursor", "not a cursor this list returned")
}

fn decode(query: &HashMap<String, String>, kind: &str) -> Result<Option<String>, ApiError> {
    let Some(text) = query.get("cursor").filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
    let raw = String::from_utf8(raw).map_err(|_| bad_cursor())?;
    raw.strip_prefix(kind)
        .map(|rest| Some(rest.to_owned()))
        .ok_or_else(bad_cursor)
}

pub fn conversation_cursor(updated_at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("c1:{}:{id}", updated_at.timestamp_micros()))
}

pub fn conversation_after(query: &HashMap<String, String>) -> Result<Option<ListAfter>, ApiError> {
    let Some(rest) = decode(query, "c1:")? else {
        return Ok(None);
    };
    let (micros, id) = rest.split_once(':').ok_or_else(bad_cursor)?;
    let micros: i64 = micros.parse().map_err(|_| bad_cursor())?;
    Ok(Some(ListAfter {
        updated_at: DateTime::from_timestamp_micros(micros).ok_or_else(bad_cursor)?,
        id: Uuid::parse_str(id).map_err(|_| bad_cursor())?,
    }))
}

pub fn message_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("m1:{id}"))
}

pub fn message_after(query: &HashMap<String, String>) -> Result<Option<i64>, ApiError> {
    match decode(query, "m1:")? {
        None => Ok(None),
        Some(id) => id.parse().map(Some).map_err(|_| bad_cursor()),
    }
}

pub fn key_cursor(created_at: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("k1:{}:{id}", created_at.timestamp_micros()))
}

pub fn key_after(
    query: &HashMap<String, String>,
) -> Result<Option<(DateTime<Utc>, String)>, ApiError> {
    let Some(rest) = decode(query, "k1:")? else {
        return Ok(None);
    };
    let (micros, id) = rest.split_once(':').ok_or_else(bad_cursor)?;
    let micros: i64 = micros.parse().map_err(|_| bad_cursor())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad_cursor)?;
    Ok(Some((at, id.to_owned())))
}

pub fn audit_cursor(at: DateTime<Utc>, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("a1:{}:{id}", at.timestamp_micros()))
}

pub fn audit_after(
    query: &HashMap<String, String>,
) -> Result<Option<(DateTime<Utc>, i64)>, ApiError> {
    let Some(rest) = decode(query, "a1:")? else {
        return Ok(None);
    };
    let (micros, id) = rest.split_once(':').ok_or_else(bad_cursor)?;
    let micros: i64 = micros.parse().map_err(|_| bad_cursor())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad_cursor)?;
    Ok(Some((at, id.parse().map_err(|_| bad_cursor())?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cursors_round_trip() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let id = Uuid::new_v4();
        let c = conversation_cursor(at, id);
        let after = conversation_after(&q(&[("cursor", &c)]))
            .expect("ok")
            .expect("some");
        assert_eq!((after.updated_at, after.id), (at, id));
        let m = message_cursor(42);
        assert_eq!(message_after(&q(&[("cursor", &m)])).expect("ok"), Some(42));
        // A message cursor is not a conversation cursor.
        assert!(conversation_after(&q(&[("cursor", &m)])).is_err());
        assert!(message_after(&q(&[("cursor", "!!")])).is_err());
        let a = audit_cursor(at, 7);
        assert_eq!(
            audit_after(&q(&[("cursor", &a)])).expect("ok"),
            Some((at, 7))
        );
        // Another list's cursor is refused, naming the field.
        let e = audit_after(&q(&[("cursor", &m)])).unwrap_err();
        assert!(e.message.starts_with("cursor:"), "{}", e.message);
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(&q(&[])).expect("default"), DEFAULT_LIMIT);
        assert_eq!(limit(&q(&[("limit", "5")])).expect("5"), 5);
        for bad in ["0", "101", "x", "-1"] {
            let e = limit(&q(&[("limit", bad)])).unwrap_err();
            assert!(e.message.starts_with("limit:"), "{}", e.message);
        }
    }

    #[test]
    fn extra_row_means_more() {
        let p = page(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(p.next_cursor.as_deref(), Some("2"));
        let p = page(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(p.next_cursor, None);
    }
}
