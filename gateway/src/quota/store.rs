//! Quota counters per org and period: tokens used, and tokens reserved by requests in flight.
//! In Redis when configured (shared by replicas, one script per decision), in memory
//! otherwise. A counter that does not exist yet (a restart, a flushed Redis) is first rebuilt
//! from the usage ledger, so a restart never resets an org's spend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::redis_conn::LazyRedis;

use super::ledger::Ledger;

const RESERVE: &str = include_str!("redis.lua");
const SETTLE: &str = "redis.call('ZREM', KEYS[2], ARGV[1]) \
    if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[2]) end \
    return 1";

/// How long a hold on the budget lasts if its request never settles (its gateway died).
const HOLD_TTL_MS: u64 = 3_600_000;

/// What a reservation asks for.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The request id: names its hold on the budget in Redis.
    pub hold: String,
    pub hard: u64,
    pub prompt_estimate: u64,
    /// The client's completion cap, if it gave one.
    pub wanted_cap: Option<u64>,
    /// The cap used when the client gave none and a hard limit applies.
    pub default_cap: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Granted {
        used: u64,
        grant: u64,
        cap: Option<u64>,
    },
    Exceeded {
        used: u64,
    },
}

#[derive(Default, Clone, Copy)]
struct Counter {
    used: u64,
    reserved: u64,
}

pub struct QuotaStore {
    local: Mutex<HashMap<String, Counter>>,
    redis: Option<RedisQuota>,
    pub ledger: Option<Arc<Ledger>>,
    /// After a Redis failure, counters are kept in memory (rebuilt from the ledger) until
    /// then; Redis is tried again after it.
    retry_redis_at: Mutex<Option<std::time::Instant>>,
}

/// Where a reservation was made, so it is settled in the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Local,
}

struct RedisQuota {
    redis: LazyRedis,
    prefix: String,
    timeout: Duration,
    reserve: redis::Script,
    settle: redis::Script,
}

impl QuotaStore {
    pub fn new(
        redis: Option<(&str, &str, Duration)>,
        ledger: Option<Arc<Ledger>>,
    ) -> Result<QuotaStore, String> {
        let redis = match redis {
            Some((url, prefix, timeout)) => Some(RedisQuota {
                redis: LazyRedis::new(url, timeout)?,
                prefix: prefix.to_string(),
                timeout,
                reserve: redis::Script::new(RESERVE),
                settle: redis::Script::new(SETTLE),
            }),
            None => None,
        };
        Ok(QuotaStore {
            local: Mutex::new(HashMap::new()),
            redis,
            ledger,
            retry_redis_at: Mutex::new(None),
        })
    }

    /// Reserves the request's maximum cost against the remaining budget. Redis when it
    /// answers; otherwise this process's counters (rebuilt from the ledger), so a Redis outage
    /// degrades to per-replica enforcement instead of none.
    pub async fn reserve(
        &self,
        org: &str,
        period: &str,
        period_start: i64,
        ask: Ask,
        ttl_s: i64,
    ) -> (Outcome, Backend) {
        if let Some(r) = self.redis.as_ref().filter(|_| !self.backing_off()) {
            match self
                .reserve_redis(r, org, period, period_start, &ask, ttl_s)
                .await
            {
                Ok(outcome) => return (outcome, Backend::Redis),
                Err(e) => {
                    tracing::warn!(error = %e, "Redis unavailable for quotas; counting in this process");
                    self.back_off();
                }
            }
        }
        if self.local_counter_missing(org, period) {
            let used = self.baseline(org, period_start).await;
            self.with_local(org, period, |c| c.used = c.used.max(used));
        }
        (
            self.with_local(org, period, |c| local_reserve(c, &ask)),
            Backend::Local,
        )
    }

    async fn reserve_redis(
        &self,
        r: &RedisQuota,
        org: &str,
        period: &str,
        period_start: i64,
        ask: &Ask,
        ttl_s: i64,
    ) -> Result<Outcome, String> {
        for _ in 0..2 {
            match r.reserve(org, period, ask, ttl_s).await? {
                Some(outcome) => return Ok(outcome),
                None => {
                    let base = self.baseline(org, period_start).await;
                    r.init(org, period, base, ttl_s).await?;
                }
            }
        }
        Err("quota counter could not be initialised".into())
    }

    /// Replaces a reservation by the real count, where it was made.
    pub async fn settle(
        &self,
        backend: Backend,
        org: &str,
        period: &str,
        hold: &str,
        grant: u64,
        actual: u64,
    ) {
        if backend == Backend::Redis {
            if let Some(r) = &self.redis {
                match r.settle(org, period, hold, grant, actual).await {
                    Ok(()) => return,
                    Err(e) => {
                        // The reservation expires with the period key; count the usage here.
                        tracing::error!(org, error = %e, "quota settlement in Redis failed");
                        self.back_off();
                    }
                }
            }
        }
        self.with_local(org, period, |c| {
            c.reserved = c.reserved.saturating_sub(grant);
            c.used += actual;
        });
    }

    fn backing_off(&self) -> bool {
        let at = self
            .retry_redis_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        at.is_some_and(|t| std::time::Instant::now() < t)
    }

    fn back_off(&self) {
        if let Ok(mut at) = self.retry_redis_at.lock() {
            *at = Some(std::time::Instant::now() + Duration::from_secs(1));
        }
    }

    async fn baseline(&self, org: &str, period_start: i64) -> u64 {
        match &self.ledger {
            Some(l) => l.usage_since(org, period_start).await,
            None => 0,
        }
    }

    fn local_counter_missing(&self, org: &str, period: &str) -> bool {
        self.local
            .lock()
            .is_ok_and(|m| !m.contains_key(&key(org, period)))
    }

    fn with_local<T>(&self, org: &str, period: &str, f: impl FnOnce(&mut Counter) -> T) -> T {
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(key(org, period)).or_default())
    }
}

fn key(org: &str, period: &str) -> String {
    format!("{org}\u{0}{period}")
}

fn local_reserve(c: &mut Counter, ask: &Ask) -> Outcome {
    let mut cap = ask.wanted_cap;
    if ask.hard > 0 {
        let remaining = ask.hard.saturating_sub(c.used + c.reserved);
        if remaining <= ask.prompt_estimate {
            return Outcome::Exceeded { used: c.used };
        }
        let room = remaining - ask.prompt_estimate;
        cap = Some(cap.unwrap_or(ask.default_cap).min(room));
    }
    let grant = ask.prompt_estimate + cap.unwrap_or(0);
    c.reserved += grant;
    Outcome::Granted {
        used: c.used,
        grant,
        cap,
    }
}

impl RedisQuota {
    fn keys(&self, org: &str, period: &str) -> (String, String) {
        (
            format!("{}quota:{org}:{period}:used", self.prefix),
            format!("{}quota:{org}:{period}:holds", self.prefix),
        )
    }

    async fn reserve(
        &self,
        org: &str,
        period: &str,
        ask: &Ask,
        ttl_s: i64,
    ) -> Result<Option<Outcome>, String> {
        let (used_key, reserved_key) = self.keys(org, period);
        let mut conn = self.redis.get().await?;
        let wanted = ask.wanted_cap.map_or(-1, |c| c as i64);
        let mut inv = self.reserve.prepare_invoke();
        inv.key(used_key)
            .key(reserved_key)
            .arg(ask.hard)
            .arg(ask.prompt_estimate)
            .arg(wanted)
            .arg(ask.default_cap)
            .arg(ttl_s.max(1) * 1000)
            .arg(&ask.hold)
            .arg(HOLD_TTL_MS);
        let call = inv.invoke_async::<Vec<i64>>(&mut conn);
        let v = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "Redis timed out".to_string())?
            .map_err(|e| format!("Redis: {e}"))?;
        let n = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(match v.first().copied() {
            Some(1) => Some(Outcome::Granted {
                used: n(1),
                grant: n(2),
                cap: (ask.hard > 0 || ask.wanted_cap.is_some()).then(|| n(3)),
            }),
            Some(0) => Some(Outcome::Exceeded { used: n(1) }),
            _ => None,
        })
    }

    async fn init(&self, org: &str, period: &str, used: u64, ttl_s: i64) -> Result<(), String> {
        let (used_key, _) = self.keys(org, period);
        let mut conn = self.redis.get().await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(used_key)
            .arg(used)
            .arg("NX")
            .arg("EX")
            .arg(ttl_s.max(1));
        let call = cmd.query_async::<Option<String>>(&mut conn);
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "Redis timed out".to_string())?
            .map_err(|e| format!("Redis: {e}"))?;
        Ok(())
    }

    async fn settle(
        &self,
        org: &str,
        period: &str,
        hold: &str,
        grant: u64,
        actual: u64,
    ) -> Result<(), String> {
        let (used_key, reserved_key) = self.keys(org, period);
        let mut conn = self.redis.get().await?;
        let mut inv = self.settle.prepare_invoke();
        inv.key(used_key)
            .key(reserved_key)
            .arg(format!("{hold}:{grant}"))
            .arg(actual);
        let call = inv.invoke_async::<i64>(&mut conn);
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "Redis timed out".to_string())?
            .map_err(|e| format!("Redis: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_overshoot() {
        let mut c = Counter::default();
        let ask = Ask {
            hold: String::new(),
            hard: 100,
            prompt_estimate: 10,
            wanted_cap: None,
            default_cap: 50,
        };
        assert_eq!(
            local_reserve(&mut c, &ask),
            Outcome::Granted {
                used: 0,
                grant: 60,
                cap: Some(50)
            }
        );
        assert_eq!(
            local_reserve(&mut c, &ask),
            Outcome::Granted {
                used: 0,
                grant: 40,
                cap: Some(30)
            }
        );
        assert_eq!(local_reserve(&mut c, &ask), Outcome::Exceeded { used: 0 });
    }
}
