//! One lazily made Redis connection, shared by the rate limiter and the quota counters. Made
//! on first use (the gateway starts while Redis is away) and remade by the connection
//! manager, so a Redis that comes back is used again by itself.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

pub struct LazyRedis {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    pub timeout: Duration,
}

impl LazyRedis {
    pub fn new(url: &str, timeout: Duration) -> Result<LazyRedis, String> {
        let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        Ok(LazyRedis {
            client,
            conn: Mutex::new(None),
            timeout,
        })
    }

    pub async fn get(&self) -> Result<ConnectionManager, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| "connecting to Redis timed out".to_string())?
        .map_err(|e| format!("connecting to Redis: {e}"))?;
        *guard = Some(conn.clone());
        Ok(conn)
    }
}
