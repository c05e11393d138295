//! The shared limiter: one Lua script per decision in Redis, so several gateway replicas
//! enforce one limit together with no read-modify-write races. The connection is made lazily
//! and remade by the connection manager, so a Redis that comes back is used again by itself.

use std::time::Duration;

use crate::redis_conn::LazyRedis;

use super::gcra::Decision;
use super::Check;

const SCRIPT: &str = include_str!("redis.lua");

pub struct RedisLimiter {
    redis: LazyRedis,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
}

impl RedisLimiter {
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisLimiter, String> {
        Ok(RedisLimiter {
            redis: LazyRedis::new(url, timeout)?,
            script: redis::Script::new(SCRIPT),
            prefix: prefix.to_string(),
            timeout,
        })
    }

    /// Runs the checks in Redis; an error means "decide without Redis".
    pub async fn decide_all(&self, checks: &[Check]) -> Result<Vec<Decision>, String> {
        let mut conn = self.redis.get().await?;
        let mut inv = self.script.prepare_invoke();
        for c in checks {
            inv.key(format!("{}{}", self.prefix, c.key));
            let mode = match c.mode {
                super::gcra::Mode::Admit => 0,
                super::gcra::Mode::Charge => 1,
            };
            inv.arg(c.rule.interval_ms)
                .arg(c.rule.tolerance_ms)
                .arg(c.cost)
                .arg(mode);
        }
        let raw: Vec<i64> = tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| "Redis did not answer in time".to_string())?
            .map_err(|e| format!("Redis: {e}"))?;
        if raw.len() != checks.len() * 4 {
            return Err(format!(
                "Redis script returned {} values for {} checks",
                raw.len(),
                checks.len()
            ));
        }
        Ok(raw
            .chunks(4)
            .map(|v| Decision {
                allowed: v[0] == 1,
                new_tat_ms: 0.0,
                remaining: v[1].max(0) as u64,
                reset_ms: v[2].max(0) as u64,
                retry_after_ms: v[3].max(0) as u64,
            })
            .collect())
    }

    /// A cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.redis.get().await?;
        let pong: Result<String, _> =
            tokio::time::timeout(self.timeout, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| "Redis did not answer in time".to_string())?;
        pong.map(|_| ()).map_err(|e| format!("Redis: {e}"))
    }
}
