//! Quota periods on the UTC calendar: which period a moment falls in, and when it ends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::policy::Period;

/// Seconds since the Unix epoch, shifted by `CORRAL_CLOCK_OFFSET_S` when set (for drills and
/// tests of period changes without waiting for midnight).
pub fn now_s() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    now + clock_offset()
}

fn clock_offset() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("CORRAL_CLOCK_OFFSET_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// (year, month, day) of a day number since the epoch (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day number of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The period containing `at` (epoch seconds): its key (`2026-11` or `2026-11-23`), start and
/// end (epoch seconds, end exclusive).
pub fn period_of(period: Period, at: i64) -> (String, i64, i64) {
    let day = at.div_euclid(86_400);
    let (y, m, d) = civil(day);
    match period {
        Period::Day => (
            format!("{y:04}-{m:02}-{d:02}"),
            day * 86_400,
            (day + 1) * 86_400,
        ),
        Period::Month => {
            let start = days_from_civil(y, m, 1) * 86_400;
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1) * 86_400;
            (format!("{y:04}-{m:02}"), start, end)
        }
    }
}

/// RFC 3339 for an epoch second (UTC).
pub fn rfc3339(at: i64) -> String {
    let (y, m, d) = civil(at.div_euclid(86_400));
    let s = at.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_days() {
        // 2026-11-23T12:00:00Z
        let t = 1_795_435_200;
        let (key, start, end) = period_of(Period::Month, t);
        assert_eq!(key, "2026-11");
        assert_eq!(rfc3339(start), "2026-11-01T00:00:00Z");
        assert_eq!(rfc3339(end), "2026-12-01T00:00:00Z");
        let (key, start, end) = period_of(Period::Day, t);
        assert_eq!(key, "2026-11-23");
        assert_eq!(end - start, 86_400);
        let (key, _, end) = period_of(Period::Month, 1_796_083_200); // 2026-12-01
        assert_eq!(key, "2026-12");
        assert_eq!(rfc3339(end), "2027-01-01T00:00:00Z");
        assert_eq!(
            period_of(Period::Month, 1_709_251_199).0,
            "2024-02",
            "leap February"
        );
    }
}
