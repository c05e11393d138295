//! A real Redis Cluster on loopback, owned by a test: three primaries started with
//! `redis-server --cluster-enabled yes` and joined by `redis-cli --cluster create`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::{redis_cli, wait_for_port};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Three primaries, no replicas, every slot covered; returns once the cluster says ok.
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..3).map(|_| crate::gateway::free_port()).collect();
        let nodes = ports.iter().map(|p| Some(node(*p, dir.path()))).collect();
        let cluster = RedisCluster {
            ports,
            nodes,
            _dir: dir,
        };
        for p in &cluster.ports {
            wait_for_port(*p);
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_state("ok");
        cluster
    }

    /// `REDIS_URL` naming every node, comma-separated.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the primary serving `key`'s slot.
    pub fn owner_of(&self, key: &str) -> u16 {
        let slot: i64 = redis_cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("slot");
        // `CLUSTER NODES` lines: "<id> <ip:port@bus> <flags> ... <start>-<end> ...".
        for line in redis_cli(self.ports[0], &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port: u16 = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("node port");
            for range in &fields[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                let (a, b): (i64, i64) = (a.parse().unwrap_or(-1), b.parse().unwrap_or(-1));
                if (a..=b).contains(&slot) {
                    return port;
                }
            }
        }
        panic!("no node serves slot {slot}");
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node");
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Keys stored on the node on `port` matching `pattern`.
    pub fn keys_on(&self, port: u16, pattern: &str) -> Vec<String> {
        redis_cli(port, &["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_state(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = redis_cli(self.ports[0], &["CLUSTER", "INFO"]);
            if info.contains(&format!("cluster_state:{want}")) {
                return;
            }
            assert!(Instant::now() < deadline, "cluster never {want}: {info}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in self.nodes.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn node(port: u16, dir: &std::path::Path) -> Child {
    let conf = dir.join(format!("nodes-{port}.conf"));
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-config-file"])
        .arg(&conf)
        .args([
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (apt-get install redis-server)")
}
