//! Token quotas per organisation: exact accounting, hard limits that concurrent requests
//! cannot overshoot (each reserves its maximum cost first, and its completion is capped to
//! fit), and a durable ledger from which usage is rebuilt after a restart.

pub mod body;
pub mod ledger;
pub mod period;
mod store;

pub use store::{Ask, Backend, Outcome, QuotaStore};

/// A request's hold on its org's budget, settled with the real count when it ends.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub org: String,
    pub period: String,
    pub grant: u64,
    pub backend: Backend,
    /// The hold's name (the request id).
    pub hold: String,
}
