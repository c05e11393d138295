//! Starting the real `gateway` binary for a test: its own port, config file and temp dir;
//! ready when `/healthz` answers; stopped explicitly (and killed on drop).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path to a workspace binary; tells how to build it when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (the README's test command does)",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub struct GatewayBuilder {
    instances: Vec<String>,
    extra_toml: String,
    env: Vec<(String, String)>,
    port: Option<u16>,
    upgrade_from: Option<PathBuf>,
    policies: Vec<(String, String)>,
}

impl GatewayBuilder {
    /// A policy file written into the gateway's own policies directory.
    pub fn policy(mut self, file: &str, text: &str) -> Self {
        self.policies.push((file.to_string(), text.to_string()));
        self
    }

    /// The pool, as URLs (written to the config file's `pool.instances`).
    pub fn instances(mut self, urls: &[String]) -> Self {
        self.instances = urls.to_vec();
        self
    }

    /// TOML appended to the generated config (e.g. a `[pool]` tweak is merged by writing the
    /// whole `[pool]` section through [`Self::pool`]).
    pub fn toml(mut self, text: &str) -> Self {
        self.extra_toml.push_str(text);
        self.extra_toml.push('\n');
        self
    }

    /// Extra `[pool]` keys, e.g. `"max_inflight_per_instance = 1"`.
    pub fn pool(self, keys: &str) -> Self {
        let mut s = self;
        for line in keys.lines() {
            s.extra_toml = format!("{}\n__POOL__{}\n", s.extra_toml, line);
        }
        s
    }

    /// Extra `[server]` keys, e.g. `"trusted_proxies = [\"127.0.0.0/8\"]"`.
    pub fn server(self, keys: &str) -> Self {
        let mut s = self;
        for line in keys.lines() {
            s.extra_toml = format!("{}\n__SERVER__{}\n", s.extra_toml, line);
        }
        s
    }

    /// Extra `[policies]` keys, e.g. `"max_file_bytes = 4096"`.
    pub fn policies(self, keys: &str) -> Self {
        let mut s = self;
        for line in keys.lines() {
            s.extra_toml = format!("{}\n__POLICIES__{}\n", s.extra_toml, line);
        }
        s
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Start as a graceful upgrade of the gateway whose temp dir is given (shares its socket).
    pub fn upgrade_from(mut self, dir: PathBuf) -> Self {
        self.upgrade_from = Some(dir);
        self
    }

    fn render(&self, dir: &std::path::Path, port: u16) -> String {
        let instances: Vec<String> = self.instances.iter().map(|u| format!("\"{u}\"")).collect();
        let mut pool_keys = String::new();
        let mut server_keys = String::new();
        let mut policy_keys = String::new();
        let mut rest = String::new();
        for part in self.extra_toml.split('\n') {
            if let Some(keys) = part.strip_prefix("__POOL__") {
                pool_keys.push_str(keys);
                pool_keys.push('\n');
            } else if let Some(keys) = part.strip_prefix("__POLICIES__") {
                policy_keys.push_str(keys);
                policy_keys.push('\n');
            } else if let Some(keys) = part.strip_prefix("__SERVER__") {
                server_keys.push_str(keys);
                server_keys.push('\n');
            } else {
                rest.push_str(part);
                rest.push('\n');
            }
        }
        // The test's own `[pool]` keys replace these defaults (TOML refuses a key twice).
        let pool_defaults: String = [("health_interval_ms", "200"), ("health_timeout_ms", "500")]
            .iter()
            .filter(|(k, _)| !pool_keys.lines().any(|l| l.trim_start().starts_with(k)))
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let sock_dir = self.upgrade_from.as_deref().unwrap_or(dir);
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 2\ngrace_period_s = 3\nshutdown_timeout_s = 2\n\
             pid_file = \"{pid}\"\nupgrade_sock = \"{sock}\"\n{server_keys}\n[log]\nlevel = \"info\"\n\n\
             [pool]\ninstances = [{inst}]\n{pool_defaults}{pool_keys}\n\
             [policies]\ndir = \"{policies}\"\nwatch_interval_ms = 200\n{policy_keys}\n{rest}",
            pid = dir.join("gateway.pid").display(),
            sock = sock_dir.join("upgrade.sock").display(),
            inst = instances.join(", "),
            policies = dir.join("policies").display(),
        )
    }

    /// Starts the gateway and waits until `/healthz` answers.
    pub async fn start(self) -> GatewayProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = self.port.unwrap_or_else(free_port);
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).expect("policies dir");
        for (file, text) in &self.policies {
            std::fs::write(policies.join(file), text).expect("write policy");
        }
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, self.render(dir.path(), port)).expect("write config");
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(binary("gateway"));
        cmd.arg("--config").arg(&config_path);
        if self.upgrade_from.is_some() {
            cmd.arg("--upgrade");
        }
        for key in [
            "GATEWAY_LISTEN",
            "OLLAMA_BASE_URL",
            "BACKEND_URL",
            "LOG_LEVEL",
            "LOG_FORMAT",
            "PROMETHEUS_ENABLED",
        ] {
            cmd.env_remove(key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.stdout(Stdio::from(log.try_clone().expect("log clone")))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("spawn gateway");
        let mut gw = GatewayProcess {
            child: Some(child),
            port,
            dir,
            log_path,
            config_path,
        };
        gw.wait_healthy().await;
        gw
    }
}

/// A running gateway.
pub struct GatewayProcess {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    pub config_path: PathBuf,
}

impl GatewayProcess {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            instances: Vec::new(),
            extra_toml: String::new(),
            env: Vec::new(),
            port: None,
            upgrade_from: None,
            policies: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory the gateway reads policy files from (tests edit files here).
    pub fn policies_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "gateway exited with {status} before it was healthy:\n{}",
                        self.log()
                    );
                }
            }
            let ok = client
                .get(format!("{}/healthz", self.url()))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not healthy after 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/readyz` reports `healthy` instances (health checks have run).
    pub async fn wait_pool_healthy(&self, healthy: usize) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url())).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if v["checks"]["pool"]["healthy"].as_u64() == Some(healthy as u64) {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "pool never reached {healthy} healthy instances:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            kill(Pid::from_raw(child.id() as i32), signal).expect("send signal");
        }
    }

    /// Waits for the process to exit by itself (after a signal), up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        None
    }

    /// Fast shutdown (SIGINT), then wait for the exit. SIGTERM would wait for requests in
    /// flight, which graceful-shutdown tests use on purpose.
    pub async fn stop(mut self) {
        self.signal(Signal::SIGINT);
        if self.wait_exit(Duration::from_secs(15)).await.is_none() {
            self.kill();
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
