//! Policy files: the one place an organisation's limits are decided. Loaded whole and
//! validated, then swapped in atomically; a broken edit is refused as a whole while the
//! previous policy keeps serving.

mod file;
mod load;
mod model;
mod reload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

pub use load::{load_dir, QuotaEnv};
pub use model::{Effective, ModelRules, Period, PolicySet};
pub use reload::PolicyReloader;

/// The live policy and the outcome of the last reload attempt.
pub struct PolicyStore {
    pub dir: PathBuf,
    pub quota_env: QuotaEnv,
    current: ArcSwap<PolicySet>,
    last_error: Mutex<Option<String>>,
}

impl PolicyStore {
    pub fn new(dir: PathBuf, quota_env: QuotaEnv, initial: PolicySet) -> Self {
        Self {
            dir,
            quota_env,
            current: ArcSwap::from_pointee(initial),
            last_error: Mutex::new(None),
        }
    }

    /// The snapshot a request uses from start to end.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Loads the directory again: swaps on success, keeps the old set and records the error
    /// otherwise.
    pub fn reload(&self) -> Result<(), String> {
        match load_dir(&self.dir, self.quota_env) {
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

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut guard) = self.last_error.lock() {
            *guard = e;
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    /// Seconds since the policy in force was loaded.
    pub fn age_s(&self) -> u64 {
        SystemTime::now()
            .duration_since(self.current.load().loaded_at)
            .map_or(0, |d| d.as_secs())
    }
}
