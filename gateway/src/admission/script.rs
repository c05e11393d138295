//! The three scripts (admit, settle, renew) and their arguments.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::limits::{Check, Decision, Mode};
use crate::plugins::quota::Prepared;
use crate::redis_conn::LazyRedis;

use super::batch::{hash_tag, Ask, QuotaAsk};
use super::{Lease, Leases, Pending, Verdict};

/// How long a hold on the quota lasts if its request never settles (its gateway died).
pub(super) const HOLD_TTL_MS: u64 = 3_600_000;

/// The scripts; a benchmark build (feature `bench-floor`) swaps in ones that decide nothing,
/// to measure what the Redis round trip alone costs (bench/limits.sh `FLOOR=1`).
#[cfg(not(feature = "bench-floor"))]
const ADMIT: &str = include_str!("admit.lua");
#[cfg(not(feature = "bench-floor"))]
const SETTLE: &str = include_str!("settle.lua");
#[cfg(feature = "bench-floor")]
const ADMIT: &str = include_str!("floor/admit.lua");
#[cfg(feature = "bench-floor")]
const SETTLE: &str = include_str!("floor/settle.lua");

pub struct Shared {
    redis: Arc<LazyRedis>,
    prefix: String,
    timeout: Duration,
    pub(super) admit: redis::Script,
    settle: redis::Script,
    renew: redis::Script,
    pub lease: Duration,
    pub leases: Arc<Leases>,
    /// Settlements waiting to be written together (see `settler`).
    pub(super) queue: super::settler::Queue,
    /// Admissions waiting for the next call of their org (see `batch`).
    pub(super) batches: super::batch::Batcher,
}

/// What the end of a request settles in Redis.
pub struct Settlement {
    /// Whose: a batch settles one org's requests (one hash slot).
    pub org: String,
    /// Token-rate balances to charge (their cost is the real count).
    pub charges: Vec<Check>,
    pub lease: Option<Lease>,
    pub quota: Option<QuotaSettle>,
    pub blocks: Option<BlockOwner>,
}

/// The instance that now holds a prompt's blocks.
pub struct BlockOwner {
    pub keys: Vec<String>,
    pub instance: String,
}

/// An integer reply element (0 for anything else).
fn int(v: &redis::Value) -> i64 {
    match v {
        redis::Value::Int(i) => *i,
        _ => 0,
    }
}

pub struct QuotaSettle {
    pub org: String,
    pub period: String,
    /// The hold's name (the request id); its member in Redis is `<hold>:<grant>`.
    pub hold: String,
    pub grant: u64,
    pub actual: u64,
}

/// The quota's keys for an org and period, with the org's hash tag: tokens used, the holds
/// of requests in flight, and the holds' total.
pub fn quota_keys(org: &str, period: &str) -> [String; 3] {
    ["used", "holds", "held"].map(|k| crate::limits::org_key(org, &format!("quota:{period}:{k}")))
}

impl Shared {
    pub fn new(redis: Arc<LazyRedis>, prefix: &str, lease: Duration) -> Shared {
        Shared {
            timeout: redis.timeout,
            redis,
            prefix: prefix.to_string(),
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
            renew: redis::Script::new(include_str!("renew.lua")),
            lease,
            leases: Arc::new(Leases::default()),
            queue: Default::default(),
            batches: Default::default(),
        }
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    /// One admission attempt, decided in the next call for the request's org (see `batch`):
    /// `Ok(None)` when the quota counter must first be rebuilt.
    pub async fn admit(
        self: &Arc<Self>,
        p: &Pending,
        member: &str,
    ) -> Result<Option<Verdict>, String> {
        let quota = p.quota.as_ref();
        let ask = Ask {
            checks: p
                .checks
                .iter()
                .map(|c| {
                    let charge = u8::from(c.mode == Mode::Charge);
                    let rule = c.rule;
                    (
                        self.key(&c.key),
                        rule.interval_ms,
                        rule.tolerance_ms,
                        c.cost,
                        charge,
                    )
                })
                .collect(),
            streams: p
                .streams
                .iter()
                .map(|(k, max)| {
                    let k = self.key(k);
                    let mark = format!("{k}:swept");
                    (k, mark, *max)
                })
                .collect(),
            quota: quota.map(|q| {
                let keys = quota_keys(&q.org, &q.period).map(|k| self.key(&k));
                QuotaAsk {
                    org: q.org.clone(),
                    period: q.period.clone(),
                    mark: format!("{}:swept", keys[1]),
                    keys,
                    hard: q.ask.hard,
                    prompt: q.ask.prompt_estimate,
                    want: q.ask.wanted_cap.map_or(-1, |c| c as i64),
                    default_cap: q.ask.default_cap,
                    ttl_ms: q.ttl_s.max(1) as u64 * 1000,
                    hold: q.ask.hold.clone(),
                }
            }),
            blocks: p.blocks.iter().map(|(k, _)| self.key(k)).collect(),
            member: member.to_string(),
            tag: String::new(),
        };
        let first = ask
            .checks
            .first()
            .map(|c| &c.0)
            .or(ask.streams.first().map(|s| &s.0))
            .or(ask.quota.as_ref().map(|q| &q.keys[0]))
            .or(ask.blocks.first());
        let tag = first.map_or("", |k| hash_tag(k)).to_string();
        let raw = self.submit(Ask { tag, ..ask }).await?;
        let v: Vec<i64> = raw.iter().map(int).collect();
        let owner = match raw.get(6) {
            Some(redis::Value::BulkString(b)) if !b.is_empty() => {
                let depth = p.blocks.get((v[5].max(1) - 1) as usize).map_or(0, |b| b.1);
                Some((String::from_utf8_lossy(b).into_owned(), depth))
            }
            _ => None,
        };
        Ok(self.verdict(p, quota, member, &v, owner))
    }

    fn verdict(
        &self,
        p: &Pending,
        quota: Option<&Prepared>,
        member: &str,
        v: &[i64],
        owner: Option<(String, usize)>,
    ) -> Option<Verdict> {
        let n = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        let decisions: Vec<Decision> = v
            .get(7..)
            .unwrap_or_default()
            .chunks(4)
            .map(|d| Decision {
                allowed: d.first() == Some(&1),
                new_tat_ms: 0.0,
                remaining: d.get(1).copied().unwrap_or(0).max(0) as u64,
                reset_ms: d.get(2).copied().unwrap_or(0).max(0) as u64,
                retry_after_ms: d.get(3).copied().unwrap_or(0).max(0) as u64,
            })
            .collect();
        Some(match v.first().copied() {
            Some(-1) => return None,
            Some(0) => {
                let i = n(1).saturating_sub(1) as usize;
                let d = decisions.get(i).copied()?;
                Verdict::RateRefused(i, d)
            }
            Some(2) => Verdict::StreamsFull,
            Some(3) => Verdict::QuotaExceeded { used: n(2) },
            _ => Verdict::Admitted {
                decisions,
                lease: (!p.streams.is_empty()).then(|| {
                    let keys = p.streams.iter().map(|(k, _)| self.key(k)).collect();
                    self.leases.hold(member.to_string(), keys)
                }),
                used: n(2),
                grant: n(3),
                cap: quota
                    .filter(|q| q.ask.hard > 0 || q.ask.wanted_cap.is_some())
                    .map(|_| n(4)),
                owner,
            },
        })
    }

    /// The end of a batch of one org's requests, in one call: the same as settling each on
    /// its own, one after the other (token charges to one balance add up, each lease and
    /// hold is freed, the counts add up, a block's last owner wins).
    pub async fn settle(&self, batch: &[&Settlement]) -> Result<(), String> {
        let mut charges: Vec<(&str, f64, f64)> = Vec::new();
        let mut streams: Vec<(&str, Vec<&str>)> = Vec::new();
        let mut quotas: Vec<(&QuotaSettle, Vec<String>, u64)> = Vec::new();
        let mut blocks: Vec<(&str, &str)> = Vec::new();
        let mut block_at: HashMap<&str, usize> = HashMap::new();
        for s in batch {
            for c in &s.charges {
                let inc = c.rule.interval_ms * c.cost;
                match charges.iter_mut().find(|(k, _, _)| *k == c.key) {
                    Some(x) => (x.1, x.2) = (x.1 + inc, x.2.max(c.rule.tolerance_ms)),
                    None => charges.push((&c.key, inc, c.rule.tolerance_ms)),
                }
            }
            if let Some(l) = &s.lease {
                for k in &l.keys {
                    match streams.iter_mut().find(|(key, _)| key == k) {
                        Some((_, members)) => members.push(&l.member),
                        None => streams.push((k, vec![&l.member])),
                    }
                }
            }
            if let Some(q) = &s.quota {
                let hold = format!("{}:{}", q.hold, q.grant);
                let same = |(x, _, _): &&mut (&QuotaSettle, _, _)| x.period == q.period;
                match quotas.iter_mut().find(same) {
                    Some((_, holds, tokens)) => {
                        holds.push(hold);
                        *tokens += q.actual;
                    }
                    None => quotas.push((q, vec![hold], q.actual)),
                }
            }
            if let Some(b) = &s.blocks {
                for k in &b.keys {
                    match block_at.get(k.as_str()) {
                        Some(&i) => blocks[i].1 = &b.instance,
                        None => {
                            block_at.insert(k, blocks.len());
                            blocks.push((k, &b.instance));
                        }
                    }
                }
            }
        }
        let mut inv = self.settle.prepare_invoke();
        inv.arg(charges.len())
            .arg(streams.len())
            .arg(quotas.len())
            .arg(blocks.len())
            .arg(super::BLOCK_TTL_S);
        for (key, inc, tolerance) in charges {
            inv.key(self.key(key)).arg(inc).arg(tolerance);
        }
        for (key, members) in streams {
            inv.key(key).arg(members.len()).arg(members);
        }
        for (q, holds, tokens) in quotas {
            for k in quota_keys(&q.org, &q.period) {
                inv.key(self.key(&k));
            }
            inv.arg(holds.len()).arg(holds).arg(tokens);
        }
        for (key, instance) in blocks {
            inv.key(self.key(key)).arg(instance);
        }
        self.call::<i64>(inv).await.map(|_| ())
    }

    pub async fn renew(&self, member: &str, keys: &[String]) -> Result<(), String> {
        let mut inv = self.renew.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        inv.arg(member).arg(self.lease.as_millis() as u64);
        self.call::<i64>(inv).await.map(|_| ())
    }

    pub(super) async fn call<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut conn = self.redis.get().await?;
        let r = tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| "Redis did not answer in time".to_string())
            .and_then(|r| r.map_err(|e| format!("Redis: {e}")));
        if r.is_err() {
            self.redis.failed();
        }
        r
    }
}
