//! A Sentinel-managed Redis on loopback, owned by a test: a primary, a replica, and one
//! sentinel (quorum 1) that promotes the replica when the primary dies.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::{redis_cli, RedisServer};

pub struct RedisSentinel {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinel_port: u16,
    sentinel: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The service name the sentinel watches.
pub const SERVICE: &str = "corralmain";

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let primary = RedisServer::start();
        let replica = RedisServer::start();
        redis_cli(
            replica.port,
            &["REPLICAOF", "127.0.0.1", &primary.port.to_string()],
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::gateway::free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 sentinel failover-timeout {SERVICE} 5000\n",
                dir = dir.path().display(),
                primary = primary.port,
            ),
        )
        .expect("sentinel.conf");
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let s = RedisSentinel {
            primary,
            replica,
            sentinel_port: port,
            sentinel: Some(sentinel),
            _dir: dir,
        };
        s.wait(
            || s.primary_port() == Some(s.primary.port),
            "sentinel to see the primary",
        );
        s
    }

    /// `REDIS_URL` for the gateway.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{SERVICE}",
            self.sentinel_port
        )
    }

    /// The port the sentinel names as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let out = redis_cli(
            self.sentinel_port,
            &["SENTINEL", "get-master-addr-by-name", SERVICE],
        );
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Waits (up to 20 s) for `ready`.
    pub fn wait(&self, ready: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.sentinel.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
