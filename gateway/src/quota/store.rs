//! Quota counters per org and period: tokens used, and tokens reserved by requests in flight.
//! With Redis they live there (shared by replicas) and the admission script reserves and
//! settles them (`admission/`); this store keeps the in-memory counters used without Redis
//! or while it is away. A counter that does not exist yet (a restart, a flushed Redis) is
//! first rebuilt from the usage ledger, so a restart never resets an org's spend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::redis_conn::LazyRedis;

use super::ledger::Ledger;

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
    redis: Option<Arc<LazyRedis>>,
    prefix: String,
    pub ledger: Option<Arc<Ledger>>,
}

/// Where a reservation was made, so it is settled in the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Local,
}

impl QuotaStore {
    pub fn new(
        redis: Option<Arc<LazyRedis>>,
        prefix: &str,
        ledger: Option<Arc<Ledger>>,
    ) -> QuotaStore {
        QuotaStore {
            local: Mutex::new(HashMap::new()),
            redis,
            prefix: prefix.to_string(),
            ledger,
        }
    }

    /// Reserves the request's maximum cost against the remaining budget in this process's
    /// counters (rebuilt from the ledger), so a Redis outage degrades to per-replica
    /// enforcement instead of none.
    pub async fn reserve(&self, org: &str, period: &str, period_start: i64, ask: Ask) -> Outcome {
        if self.local_counter_missing(org, period) {
            let used = self.baseline(org, period_start).await;
            self.with_local(org, period, |c| c.used = c.used.max(used));
        }
        self.with_local(org, period, |c| local_reserve(c, &ask))
    }

    /// Replaces an in-memory reservation by the real count (also where a Redis settlement
    /// failed: the usage is then counted here).
    pub fn settle_local(&self, org: &str, period: &str, grant: u64, actual: u64) {
        self.with_local(org, period, |c| {
            c.reserved = c.reserved.saturating_sub(grant);
            c.used += actual;
        });
    }

    /// Creates the Redis counter of an org's period from the ledger, when it is missing (the
    /// admission script said so); an existing one is left alone.
    pub async fn init_counter(
        &self,
        org: &str,
        period: &str,
        period_start: i64,
        ttl_s: i64,
    ) -> Result<(), String> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let used = self.baseline(org, period_start).await;
        let [used_key, _, _] = crate::admission::quota_keys(org, period);
        let mut conn = redis.get().await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}{used_key}", self.prefix))
            .arg(used)
            .arg("NX")
            .arg("EX")
            .arg(ttl_s.max(1));
        let call = cmd.query_async::<Option<String>>(&mut conn);
        tokio::time::timeout(redis.timeout, call)
            .await
            .map_err(|_| "Redis timed out".to_string())?
            .map_err(|e| format!("Redis: {e}"))?;
        Ok(())
    }

    /// Tokens the org has used this period, for the console: the shared count in Redis, else
    /// this process's counter, else the ledger's sum (a counter nobody has built yet).
    pub async fn used(&self, org: &str, period: &str, period_start: i64) -> u64 {
        if let Some(n) = self.used_in_redis(org, period).await {
            return n;
        }
        let local = self
            .local
            .lock()
            .ok()
            .and_then(|m| m.get(&key(org, period)).map(|c| c.used));
        match local {
            Some(n) => n,
            None => self.baseline(org, period_start).await,
        }
    }

    async fn used_in_redis(&self, org: &str, period: &str) -> Option<u64> {
        let redis = self.redis.as_ref()?;
        let [used_key, _, _] = crate::admission::quota_keys(org, period);
        let mut conn = redis.get().await.ok()?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(format!("{}{used_key}", self.prefix));
        let call = cmd.query_async::<Option<u64>>(&mut conn);
        tokio::time::timeout(redis.timeout, call).await.ok()?.ok()?
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
