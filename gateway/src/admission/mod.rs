//! Admission with Redis in one round trip. The rate-limit and quota plugins only say what a
//! request must pass (their checks, its stream limits, its quota reservation); once the
//! plugin chain is through, one script decides them all together and applies them only when
//! all allow; under load one call decides many requests of an org (`batch`). The end of the
//! request (token charges, lease release, quota settlement) joins a batch written off the
//! request path, one script per org for many requests (`settler`). Without Redis, or while
//! it is away, the plugins decide in memory as before.

mod batch;
mod leases;
mod msgpack;
mod run;
mod script;
mod settler;

use std::time::Duration;

pub use leases::{Lease, LeaseKeeper, Leases};
pub use run::admit;
pub use script::{quota_keys, BlockOwner, QuotaSettle, Settlement, Shared};
pub use settler::settle;

use crate::limits::{Check, Decision};

/// What a request must pass, collected by the plugins.
#[derive(Default)]
pub struct Pending {
    pub checks: Vec<Check>,
    /// Stream limits: (key, max), max 0 = none.
    pub streams: Vec<(String, u64)>,
    /// Who the stream limits are for, for the refusal message.
    pub org: String,
    pub org_max_streams: u64,
    pub quota: Option<crate::plugins::quota::Prepared>,
    /// The prompt's blocks (org-tagged keys, shallow to deep) and the depth each stands for,
    /// so the script names the instance that last served the deepest (see `blocks`).
    pub blocks: Vec<(String, usize)>,
}

/// The deepest prompt blocks shared through Redis: enough to find where the previous turns
/// of a conversation went, few enough to keep the script short.
const SHARED_BLOCKS: usize = 32;

/// How long Redis remembers which instance holds a block: a prompt cache outlives neither a
/// model's keep-alive (Ollama's default is 5 minutes) nor many other conversations.
pub const BLOCK_TTL_S: u64 = 600;

/// The Redis keys of a prompt's blocks past its system prompt (the deepest
/// [`SHARED_BLOCKS`]), then its session key, each with the depth it stands for.
pub fn blocks(org: &str, chain: &crate::pool::prefix::PromptChain) -> Vec<(String, usize)> {
    let deep = chain
        .blocks
        .len()
        .saturating_sub(SHARED_BLOCKS)
        .max(chain.system_blocks);
    let key = |h: u64| crate::limits::org_key(org, &format!("pfx:{h:016x}"));
    let mut out: Vec<(String, usize)> = chain.blocks[deep..]
        .iter()
        .enumerate()
        .map(|(i, h)| (key(*h), deep + i + 1))
        .collect();
    if let Some(s) = chain.session {
        out.push((key(s), chain.blocks.len()));
    }
    out
}

/// What the script decided.
#[derive(Debug)]
pub enum Verdict {
    Admitted {
        decisions: Vec<Decision>,
        lease: Option<Lease>,
        /// Tokens used, granted, and the completion cap (when the quota asked for one).
        used: u64,
        grant: u64,
        cap: Option<u64>,
        /// The instance (URL) that last served the deepest known block, and that depth.
        owner: Option<(String, usize)>,
    },
    RateRefused(usize, Decision),
    StreamsFull,
    QuotaExceeded {
        used: u64,
    },
}

/// How often a request waiting for a stream slot held on another replica asks again (a slot
/// freed on this replica wakes it at once).
const STREAM_POLL: Duration = Duration::from_millis(50);
