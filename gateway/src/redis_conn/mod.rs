//! One lazily made Redis connection, shared by the rate limiter, the quota counters and the
//! admission script. Made on first use (the gateway starts while Redis is away) and remade
//! after failures, so a Redis that comes back is used again by itself. `REDIS_URL` may name
//! one server, a cluster or a Sentinel-managed primary (see [`url`]).

pub mod url;

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

pub use url::RedisTarget;

/// A connection of whichever kind `REDIS_URL` asked for; cheap to clone (multiplexed).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Source {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    /// Asked for the current primary at every (re)connection.
    Sentinel(Mutex<redis::sentinel::SentinelClient>),
}

pub struct LazyRedis {
    source: Source,
    conn: Mutex<Option<Conn>>,
    pub timeout: Duration,
}

impl LazyRedis {
    pub fn new(url: &str, timeout: Duration) -> Result<LazyRedis, String> {
        let bad = |e: redis::RedisError| format!("REDIS_URL: {e}");
        let source = match url::parse(url).map_err(|e| format!("REDIS_URL: {e}"))? {
            RedisTarget::Single(u) => Source::Single(redis::Client::open(u).map_err(bad)?),
            RedisTarget::Cluster(nodes) => Source::Cluster(
                redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()
                    .map_err(bad)?,
            ),
            RedisTarget::Sentinel {
                sentinels,
                service,
                db,
                username,
                password,
            } => {
                let node = redis::sentinel::SentinelNodeConnectionInfo {
                    tls_mode: None,
                    redis_connection_info: Some(redis::RedisConnectionInfo {
                        db,
                        username,
                        password,
                        ..Default::default()
                    }),
                };
                Source::Sentinel(Mutex::new(
                    redis::sentinel::SentinelClient::build(
                        sentinels,
                        service,
                        Some(node),
                        redis::sentinel::SentinelServerType::Master,
                    )
                    .map_err(bad)?,
                ))
            }
        };
        Ok(LazyRedis {
            source,
            conn: Mutex::new(None),
            timeout,
        })
    }

    pub async fn get(&self) -> Result<Conn, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let conn = tokio::time::timeout(self.timeout * 2, self.connect())
            .await
            .map_err(|_| "connecting to Redis timed out".to_string())??;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// After a failure: with Sentinel the primary may have moved, so the next use asks the
    /// sentinels again (a single server or a cluster reconnects by itself).
    pub fn failed(&self) {
        if matches!(self.source, Source::Sentinel(_)) {
            if let Ok(mut c) = self.conn.try_lock() {
                *c = None;
            }
        }
    }

    async fn connect(&self) -> Result<Conn, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let failed = |e: redis::RedisError| format!("connecting to Redis: {e}");
        match &self.source {
            Source::Single(client) => ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map(Conn::Single)
                .map_err(failed),
            Source::Cluster(client) => client
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(failed),
            Source::Sentinel(sentinel) => {
                let client = sentinel
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(|e| format!("asking the sentinels for the primary: {e}"))?;
                ConnectionManager::new_with_config(client, config)
                    .await
                    .map(Conn::Single)
                    .map_err(failed)
            }
        }
    }
}
