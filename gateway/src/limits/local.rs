//! The in-memory limiter: GCRA state per key in this process (one gateway, or the fallback
//! while Redis is away).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::gcra::{decide, Decision};
use super::Check;

/// Entries idle this long are dropped on the next sweep.
const SWEEP_EVERY: usize = 4096;

#[derive(Default)]
pub struct LocalLimiter {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tats: HashMap<String, f64>,
    calls: usize,
}

pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl LocalLimiter {
    /// Decides every check; stores the new state only when all are allowed.
    pub fn decide_all(&self, checks: &[Check]) -> Vec<Decision> {
        let now = now_ms();
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let decisions: Vec<Decision> = checks
            .iter()
            .map(|c| decide(state.tats.get(&c.key).copied(), now, c.rule, c.cost, c.mode))
            .collect();
        if decisions.iter().all(|d| d.allowed) {
            for (c, d) in checks.iter().zip(&decisions) {
                state.tats.insert(c.key.clone(), d.new_tat_ms);
            }
        }
        state.calls += 1;
        if state.calls % SWEEP_EVERY == 0 {
            state.tats.retain(|_, tat| *tat > now);
        }
        decisions
    }
}
