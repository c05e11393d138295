//! Recent activity the gateway keeps for its console: a 15-minute series of traffic and
//! per-org counters since start. Both are cheap to update (one short lock each per request)
//! and bounded in memory.

pub mod orgs;
pub mod series;

use std::time::SystemTime;

pub use orgs::{OrgActivity, Outcome};
pub use series::Series;

pub struct Activity {
    pub series: Series,
    pub orgs: OrgActivity,
    /// Since when the counters count.
    pub since: SystemTime,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            series: Series::default(),
            orgs: OrgActivity::default(),
            since: SystemTime::now(),
        }
    }
}
