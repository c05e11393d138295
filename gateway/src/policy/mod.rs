//! Policy files: the one place an organisation's limits are decided. Loaded whole and
//! validated, then swapped in atomically; a broken edit is refused as a whole while the
//! previous policy keeps serving.

mod file;
mod load;
mod locate;
mod model;
mod read;
mod reload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

pub use load::{load_dir, QuotaEnv};
pub use model::{Effective, Limits, ModelRules, Period, PolicySet, Quota, UserOverride};
pub use reload::PolicyReloader;

/// The live policy and the outcome of the last reload attempt.
pub struct PolicyStore {
    pub dir: PathBuf,
    pub quota_env: QuotaEnv,
    pub max_file_bytes: u64,
    current: ArcSwap<PolicySet>,
    /// The last refused edit's message and when it was first refused.
    last_error: Mutex<Option<(String, SystemTime)>>,
    /// When the watcher last finished looking at the directory (ms since the epoch; 0 =
    /// never): a watcher stuck on a hung filesystem shows in `/readyz` as this grows old.
    last_poll_ms: AtomicU64,
}

impl PolicyStore {
    pub fn new(dir: PathBuf, quota_env: QuotaEnv, max_file_bytes: u64, initial: PolicySet) -> Self {
        Self {
            dir,
            quota_env,
            max_file_bytes,
            current: ArcSwap::from_pointee(initial),
            last_error: Mutex::new(None),
            last_poll_ms: AtomicU64::new(now_ms()),
        }
    }

    /// The snapshot a request uses from start to end.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Loads the directory again (blocking file reads: call it off the async workers):
    /// swaps on success, keeps the old set and records the error otherwise.
    pub fn reload(&self) -> Result<(), String> {
        match load_dir(&self.dir, self.quota_env, self.max_file_bytes) {
            Ok(set) => {
                self.current.store(Arc::new(set));
                self.set_error(None);
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                self.set_error(Some(msg.clone()));
                Err(msg)
            }
        }
    }

    pub(crate) fn set_error(&self, e: Option<String>) {
        if let Ok(mut guard) = self.last_error.lock() {
            // The same refusal seen again on the next look keeps its first time.
            if guard.as_ref().map(|(m, _)| m) != e.as_ref() {
                *guard = e.map(|m| (m, SystemTime::now()));
            }
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_refused().map(|(m, _)| m)
    }

    /// The refused edit in force (the previous policy keeps serving) and when it was refused.
    pub fn last_refused(&self) -> Option<(String, SystemTime)> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    /// Seconds since the policy in force was loaded.
    pub fn age_s(&self) -> u64 {
        SystemTime::now()
            .duration_since(self.current.load().loaded_at)
            .map_or(0, |d| d.as_secs())
    }

    pub(crate) fn mark_polled(&self) {
        self.last_poll_ms.store(now_ms(), Ordering::Release);
    }

    /// Time since the watcher last completed a look at the directory.
    pub fn since_last_poll(&self) -> Duration {
        let last = self.last_poll_ms.load(Ordering::Acquire);
        Duration::from_millis(now_ms().saturating_sub(last))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
