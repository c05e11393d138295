//! Models on the GPU: loading, keep-alive expiry, and which one to evict for another.
//!
//! Like Ollama's scheduler (server/sched.go), a model is shared by every request for it
//! (its reference count), stays loaded `keep_alive` after its last request ends, and is
//! unloaded early only to make room: when `max_loaded_models` are loaded, a model with
//! no request running is evicted. Ollama picks that victim by shortest keep-alive, then
//! by name; the simulator picks the least recently used idle model, which is the same
//! when keep-alives are equal and makes benchmarks of model switching meaningful. With
//! every loaded model busy the request waits, as Ollama's does. A model's prompt-cache
//! slots live and die with it.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::slots::Slots;
use crate::fake_ollama::shapes::{ps_entry, rfc3339};

/// One model loaded (or loading) on the GPU.
#[derive(Debug)]
pub(crate) struct Runner {
    /// Canonical name (`llama3` → `llama3:latest`), as `/api/ps` shows it.
    pub name: String,
    /// When loading ends; the runner serves nothing before.
    pub ready_at: Instant,
    pub slots: Slots,
    /// Requests attached and waiting for a slot, oldest first (Ollama's runner semaphore).
    pub queue: VecDeque<u64>,
    /// Requests attached, waiting or running: the scheduler's reference count.
    pub active: usize,
    /// When a request last attached or left: the eviction order.
    pub last_used: Instant,
    /// Keep-alive of the latest request (or the instance default), already scaled.
    pub keep_alive: Duration,
}

impl Runner {
    pub fn new(
        name: &str,
        now: Instant,
        load: Duration,
        slots: Slots,
        keep_alive: Duration,
    ) -> Self {
        Self {
            name: name.to_string(),
            ready_at: now + load,
            slots,
            queue: VecDeque::new(),
            active: 0,
            last_used: now,
            keep_alive,
        }
    }

    pub fn is_ready(&self, now: Instant) -> bool {
        now >= self.ready_at
    }

    /// Idle and loaded: may be evicted to make room.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.active == 0 && self.is_ready(now)
    }

    /// When an idle runner unloads; `None` while in use or when kept forever.
    pub fn expires_at(&self) -> Option<Instant> {
        if self.active > 0 {
            return None;
        }
        self.last_used
            .max(self.ready_at)
            .checked_add(self.keep_alive)
    }

    /// The `/api/ps` entry: Ollama's shape, with the real expiry (a busy model shows
    /// when it would expire if its requests ended now).
    pub fn ps_entry(&self, now: Instant) -> Value {
        let expires = match self.expires_at() {
            Some(at) => at.checked_duration_since(now).unwrap_or_default(),
            None if self.active > 0 => self.keep_alive,
            None => Duration::MAX,
        };
        // Ollama prints "forever" as a date centuries away; a hundred years will do.
        let expires = expires.min(Duration::from_secs(100 * 365 * 86_400));
        let mut entry = ps_entry(&self.name);
        entry["expires_at"] = json!(rfc3339(SystemTime::now() + expires));
        entry
    }
}

/// Unloads idle runners whose keep-alive has run out; returns how many.
pub(crate) fn expire(runners: &mut Vec<Runner>, now: Instant) -> usize {
    let before = runners.len();
    runners.retain(|r| !(r.is_idle(now) && r.expires_at().is_some_and(|at| at <= now)));
    before - runners.len()
}

/// The index of the least recently used idle runner: the one to evict for a new model.
pub(crate) fn eviction_candidate(runners: &[Runner], now: Instant) -> Option<usize> {
    runners
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_idle(now))
        .min_by_key(|(_, r)| r.last_used)
        .map(|(index, _)| index)
}

/// The runner serving `name`, loaded or loading.
pub(crate) fn find<'a>(runners: &'a mut [Runner], name: &str) -> Option<&'a mut Runner> {
    runners
        .iter_mut()
        .find(|r| r.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(name: &str, now: Instant, keep: u64) -> Runner {
        Runner::new(
            name,
            now,
            Duration::ZERO,
            Slots::new(2),
            Duration::from_secs(keep),
        )
    }

    #[test]
    fn idle_runners_expire_after_keep_alive() {
        let t0 = Instant::now();
        let mut runners = vec![runner("a:latest", t0, 5), runner("b:latest", t0, 10)];
        runners[1].active = 1;
        assert_eq!(expire(&mut runners, t0 + Duration::from_secs(4)), 0);
        assert_eq!(expire(&mut runners, t0 + Duration::from_secs(60)), 1);
        assert_eq!(runners.len(), 1);
        assert_eq!(runners[0].name, "b:latest", "busy runners never expire");
    }

    #[test]
    fn eviction_takes_the_least_recently_used_idle_runner() {
        let t0 = Instant::now();
        let mut runners = vec![runner("a:latest", t0, 300), runner("b:latest", t0, 300)];
        runners[0].last_used = t0 + Duration::from_secs(2);
        runners[1].last_used = t0 + Duration::from_secs(1);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(eviction_candidate(&runners, now), Some(1));
        runners[1].active = 1;
        assert_eq!(eviction_candidate(&runners, now), Some(0));
        runners[0].active = 1;
        assert_eq!(eviction_candidate(&runners, now), None);
    }

    #[test]
    fn ps_entry_has_ollamas_shape() {
        let now = Instant::now();
        let entry = runner("llama3:8b", now, 300).ps_entry(now);
        for key in [
            "name",
            "model",
            "size",
            "digest",
            "details",
            "expires_at",
            "size_vram",
        ] {
            assert!(entry.get(key).is_some(), "{key} in {entry}");
        }
        assert_eq!(entry["name"], "llama3:8b");
        assert_ne!(entry["expires_at"], "2099-01-01T00:00:00Z");
    }
}
