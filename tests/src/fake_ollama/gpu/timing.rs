//! Turning the model's milliseconds into waits, and reading Ollama's `keep_alive`.

use std::time::Duration;

use serde_json::Value;

/// `ms` simulated milliseconds as a wall-clock wait under `time_scale`.
pub(crate) fn scaled(ms: f64, time_scale: f64) -> Duration {
    let seconds = ms * time_scale / 1_000.0;
    if seconds.is_finite() && seconds > 0.0 {
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

/// A duration scaled by `time_scale`, keeping `Duration::MAX` ("forever") as it is.
pub(crate) fn scaled_duration(d: Duration, time_scale: f64) -> Duration {
    if d == Duration::MAX {
        return d;
    }
    scaled(d.as_secs_f64() * 1_000.0, time_scale)
}

/// How much slower each busy sequence decodes when `busy` slots decode together:
/// `1 + slowdown × (busy − 1)`, see [`super::config::BATCH_SLOWDOWN`] for why.
pub(crate) fn batch_factor(busy: usize, slowdown: f64) -> f64 {
    1.0 + slowdown * busy.saturating_sub(1) as f64
}

/// A request's `keep_alive`, as Ollama reads it: a number of seconds or a Go duration
/// string (`"5m"`, `"1h30m"`, `"0"`); negative means forever. `None` when absent or
/// unreadable, so the instance's default applies.
pub(crate) fn keep_alive_of(request: &Value) -> Option<Duration> {
    match request.get("keep_alive")? {
        Value::Number(n) => n.as_f64().map(seconds),
        Value::String(s) => parse_duration(s),
        _ => None,
    }
}

fn seconds(s: f64) -> Duration {
    if s < 0.0 {
        Duration::MAX
    } else {
        Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
    }
}

/// A Go duration (`"300ms"`, `"1h30m"`, `"-1m"`) or a bare number of seconds; negative
/// values mean forever (`Duration::MAX`), as `OLLAMA_KEEP_ALIVE` reads them.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(n) = text.parse::<f64>() {
        return Some(seconds(n));
    }
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += number * unit_seconds(&rest[..unit_len])?;
        rest = &rest[unit_len..];
    }
    Some(seconds(if negative { -total } else { total }))
}

fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_like_ollama() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("-1"), Some(Duration::MAX));
        assert_eq!(parse_duration("-5m"), Some(Duration::MAX));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(
            keep_alive_of(&json!({"keep_alive": 0})),
            Some(Duration::ZERO)
        );
        assert_eq!(
            keep_alive_of(&json!({"keep_alive": "10s"})),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            keep_alive_of(&json!({"keep_alive": -1})),
            Some(Duration::MAX)
        );
        assert_eq!(keep_alive_of(&json!({})), None);
    }

    #[test]
    fn scaling_and_batching() {
        assert_eq!(scaled(3_000.0, 0.1), Duration::from_millis(300));
        assert_eq!(scaled(-1.0, 1.0), Duration::ZERO);
        assert_eq!(scaled_duration(Duration::MAX, 0.1), Duration::MAX);
        assert_eq!(
            scaled_duration(Duration::from_secs(300), 0.01),
            Duration::from_secs(3)
        );
        assert_eq!(batch_factor(0, 0.1), 1.0);
        assert_eq!(batch_factor(1, 0.1), 1.0);
        assert!((batch_factor(4, 0.1) - 1.3).abs() < 1e-9);
    }
}
