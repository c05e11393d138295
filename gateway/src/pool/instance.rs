//! One Ollama instance of the pool and the live state the proxy and the health checker share.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::UpstreamUrl;

/// Models an instance has (`/api/tags`) and has loaded in memory (`/api/ps`).
#[derive(Debug, Default, Clone)]
pub struct ModelSets {
    pub available: HashSet<String>,
    pub loaded: HashSet<String>,
    /// Raw `/api/tags` and `/api/ps` entries, kept for the merged listings.
    pub tags: Vec<serde_json::Value>,
    pub ps: Vec<serde_json::Value>,
}

#[derive(Debug)]
pub struct Instance {
    pub index: usize,
    pub url: UpstreamUrl,
    /// Resolved by the health checker, never on the request path.
    pub addr: ArcSwap<Option<SocketAddr>>,
    pub healthy: AtomicBool,
    pub in_flight: AtomicUsize,
    pub consecutive_5xx: AtomicU32,
    /// Replies to client requests went wrong: the health checker should look at this
    /// instance now, and eject it only if its own probe fails too.
    pub probe_wanted: AtomicBool,
    pub models: ArcSwap<ModelSets>,
    /// Recent errors and health changes, for the console.
    pub events: super::events::Events,
}

impl Instance {
    pub fn new(index: usize, url: UpstreamUrl) -> Self {
        Self {
            index,
            url,
            addr: ArcSwap::from_pointee(None),
            healthy: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            consecutive_5xx: AtomicU32::new(0),
            probe_wanted: AtomicBool::new(false),
            models: ArcSwap::from_pointee(ModelSets::default()),
            events: super::events::Events::default(),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn has_model(&self, model: &str) -> bool {
        self.models.load().available.contains(model)
    }

    pub fn has_loaded(&self, model: &str) -> bool {
        self.models.load().loaded.contains(model)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes one slot if fewer than `cap` are in use; never overshoots under races.
    pub fn try_take_slot(&self, cap: usize) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }
}

/// Ollama resolves a bare name to its `:latest` tag; the pool does the same so `llama3` and
/// `llama3:latest` are one model.
pub fn normalize_model(name: &str) -> String {
    let name = name.trim();
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// A taken in-flight slot. Dropping it hands the slot to the next waiting request (fair
/// queue) or frees it.
pub struct SlotGuard {
    pub instance: Arc<Instance>,
    pub(super) pool: Arc<super::Pool>,
    /// False once the slot was given back by other means (see `Pool::release`).
    pub(super) armed: bool,
    /// How cache-aware routing chose this instance.
    pub affinity: Affinity,
    /// How long choosing it took, when it was chosen at once (not from the queue).
    pub(super) decided: Option<std::time::Duration>,
    /// The instance did not have the request's model loaded when it was chosen: the request
    /// pays for a load, and its first token teaches the pool what one costs.
    pub cold: bool,
    /// When the slot was taken (a request's hold time, and a cold one's load, count from it).
    pub taken: std::time::Instant,
}

/// How cache-aware routing went for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// Sent to the instance holding its longest prefix (blocks matched).
    Hit(usize),
    /// No instance held any of it (a new conversation), or its owner went away.
    Miss,
    /// Its owner was too busy (bounded load): sent to another.
    Overloaded,
    /// Not routed by prefix (another balance mode, or not a prompt).
    None,
}

impl Affinity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Affinity::Hit(_) => "hit",
            Affinity::Miss => "miss",
            Affinity::Overloaded => "overloaded",
            Affinity::None => "none",
        }
    }
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard")
            .field("instance", &self.instance.url.base)
            .finish()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(&self.instance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_mean_latest() {
        assert_eq!(normalize_model("llama3"), "llama3:latest");
        assert_eq!(normalize_model("llama3:8b"), "llama3:8b");
        assert_eq!(
            normalize_model("registry:5000/ns/m"),
            "registry:5000/ns/m:latest"
        );
        assert_eq!(normalize_model("hf.co/org/m:Q4"), "hf.co/org/m:Q4");
    }
}
