//! Redis's health as the limits see it: a ping for `/readyz`. The decisions themselves are
//! made by the admission script (`admission/admit.lua`), one round trip per request.

use std::sync::Arc;

use crate::redis_conn::LazyRedis;

pub struct RedisHealth {
    redis: Arc<LazyRedis>,
}

impl RedisHealth {
    pub fn new(redis: Arc<LazyRedis>) -> RedisHealth {
        RedisHealth { redis }
    }

    /// A cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.redis.get().await?;
        let pong: Result<String, _> = tokio::time::timeout(
            self.redis.timeout,
            redis::cmd("PING").query_async(&mut conn),
        )
        .await
        .map_err(|_| "Redis did not answer in time".to_string())?;
        if pong.is_err() {
            self.redis.failed();
        }
        pong.map(|_| ()).map_err(|e| format!("Redis: {e}"))
    }
}
