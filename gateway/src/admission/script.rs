//! The three scripts (admit, settle, renew) and their arguments.

use std::sync::Arc;
use std::time::Duration;

use crate::limits::{Check, Decision, Mode};
use crate::plugins::quota::Prepared;
use crate::redis_conn::LazyRedis;

use super::{Lease, Leases, Pending, Verdict};

/// How long a hold on the quota lasts if its request never settles (its gateway died).
const HOLD_TTL_MS: u64 = 3_600_000;

pub struct Shared {
    redis: Arc<LazyRedis>,
    prefix: String,
    timeout: Duration,
    admit: redis::Script,
    settle: redis::Script,
    renew: redis::Script,
    pub lease: Duration,
    pub leases: Arc<Leases>,
}

/// What the end of a request settles in Redis.
pub struct Settlement {
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
            admit: redis::Script::new(include_str!("admit.lua")),
            settle: redis::Script::new(include_str!("settle.lua")),
            renew: redis::Script::new(include_str!("renew.lua")),
            lease,
            leases: Arc::new(Leases::default()),
        }
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    /// One admission attempt: `Ok(None)` when the quota counter must first be rebuilt.
    pub async fn admit(&self, p: &Pending, member: &str) -> Result<Option<Verdict>, String> {
        let quota = p.quota.as_ref();
        let mut inv = self.admit.prepare_invoke();
        inv.arg(p.checks.len())
            .arg(p.streams.len())
            .arg(u8::from(quota.is_some()))
            .arg(member)
            .arg(self.lease.as_millis() as u64)
            .arg(p.blocks.len());
        for c in &p.checks {
            inv.key(self.key(&c.key))
                .arg(c.rule.interval_ms)
                .arg(c.rule.tolerance_ms)
                .arg(c.cost)
                .arg(u8::from(c.mode == Mode::Charge));
        }
        for (k, max) in &p.streams {
            inv.key(self.key(k)).arg(*max);
        }
        if let Some(q) = quota {
            for k in quota_keys(&q.org, &q.period) {
                inv.key(self.key(&k));
            }
            inv.arg(q.ask.hard)
                .arg(q.ask.prompt_estimate)
                .arg(q.ask.wanted_cap.map_or(-1, |c| c as i64))
                .arg(q.ask.default_cap)
                .arg(q.ttl_s.max(1) * 1000)
                .arg(&q.ask.hold)
                .arg(HOLD_TTL_MS);
        }
        for (k, _) in &p.blocks {
            inv.key(self.key(k));
        }
        let raw: Vec<redis::Value> = self.call(inv).await?;
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

    /// The end of a request, in one call (sent off the request path by the caller). The lease
    /// is let go either way; on an error the rest is left to the caller's fallback.
    pub async fn settle(&self, s: &mut Settlement) -> Result<(), String> {
        let member = s.lease.as_ref().map_or("", |l| l.member.as_str());
        let mut inv = self.settle.prepare_invoke();
        let streams = s.lease.as_ref().map_or(&[][..], |l| &l.keys[..]);
        let (blocks, owner) = s
            .blocks
            .as_ref()
            .map_or((&[][..], ""), |b| (&b.keys[..], b.instance.as_str()));
        inv.arg(s.charges.len())
            .arg(streams.len())
            .arg(u8::from(s.quota.is_some()))
            .arg(member)
            .arg(blocks.len())
            .arg(owner)
            .arg(super::BLOCK_TTL_S);
        for c in &s.charges {
            inv.key(self.key(&c.key))
                .arg(c.rule.interval_ms)
                .arg(c.rule.tolerance_ms)
                .arg(c.cost);
        }
        for k in streams {
            inv.key(k);
        }
        if let Some(q) = &s.quota {
            for k in quota_keys(&q.org, &q.period) {
                inv.key(self.key(&k));
            }
            inv.arg(format!("{}:{}", q.hold, q.grant)).arg(q.actual);
        }
        for k in blocks {
            inv.key(self.key(k));
        }
        let result: Result<i64, String> = self.call(inv).await;
        if s.lease.take().is_some() {
            self.leases.freed.notify_waiters();
        }
        result.map(|_| ())
    }

    pub async fn renew(&self, member: &str, keys: &[String]) -> Result<(), String> {
        let mut inv = self.renew.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        inv.arg(member).arg(self.lease.as_millis() as u64);
        self.call::<i64>(inv).await.map(|_| ())
    }

    async fn call<T: redis::FromRedisValue>(
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
