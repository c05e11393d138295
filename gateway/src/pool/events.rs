//! What happened to an instance lately (errors, ejections, admissions), for the console's
//! pool view: a short list per instance, written off the hot path (only when
//! something goes wrong or health changes).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// Events kept per instance.
const KEPT: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unix seconds.
    pub at: i64,
    /// `error`, `ejected` or `admitted`.
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Events {
    list: Mutex<VecDeque<Event>>,
    /// When the health checker last finished a probe of this instance (unix ms; 0 = never).
    checked_ms: AtomicI64,
}

impl Events {
    pub fn push(&self, kind: &'static str, message: impl Into<String>) {
        let event = Event {
            at: crate::quota::period::now_s(),
            kind,
            message: message.into(),
        };
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() == KEPT {
            list.pop_front();
        }
        list.push_back(event);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<Event> {
        let list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().rev().cloned().collect()
    }

    pub fn mark_checked(&self) {
        self.checked_ms.store(unix_ms(), Ordering::Release);
    }

    /// Milliseconds since the last finished probe, if any.
    pub fn since_checked_ms(&self) -> Option<i64> {
        let at = Some(self.checked_ms.load(Ordering::Acquire)).filter(|ms| *ms > 0)?;
        Some((unix_ms() - at).max(0))
    }
}

/// The wall clock (not the quota clock, which tests may shift).
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_first_and_bounded() {
        let e = Events::default();
        for i in 0..25 {
            e.push("error", format!("answered 500 ({i})"));
        }
        let recent = e.recent();
        assert_eq!(recent.len(), KEPT);
        assert_eq!(recent[0].message, "answered 500 (24)");
        assert_eq!(recent[KEPT - 1].message, "answered 500 (5)");
    }
}
