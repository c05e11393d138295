//! Starting the real `backend` binary for a test, against a database of its own.
//!
//! - [`TestDb`]: a fresh PostgreSQL database (`corral_test_<random>`) on the machine's server,
//!   dropped when the test ends.
//! - [`BackendBuilder`] / [`BackendProcess`]: `backend serve` on its own port with a generated
//!   config file; ready when `/healthz` answers; stopped explicitly (killed on drop).
//! - [`TcpProxy`]: a cuttable TCP hop between the backend and PostgreSQL, to stage a database
//!   outage and its end without touching the shared server.
//! - [`Api`]: a JSON client carrying a caller's token.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::gateway::{binary, free_port};
use crate::jwt;

/// The HS256 secret tests give both the gateway and the backend.
pub const SECRET: &str = "a-long-enough-test-secret-for-hs256-signing";
/// The `API_KEY_PEPPER` tests give the backend and the gateway alike.
pub const PEPPER: &str = "a-test-pepper-of-more-than-sixteen-bytes";

/// The maintenance database URL used to create and drop test databases; override with
/// `CORRAL_TEST_DATABASE_URL`.
pub fn admin_url() -> String {
    std::env::var("CORRAL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Replaces the database name of a `postgres://` URL (and optionally the port).
fn with_database(url: &str, db: &str, port: Option<u16>) -> String {
    let (base, _) = url.rsplit_once('/').expect("URL has a /database part");
    let base = match port {
        Some(p) => {
            let (host, _) = base.rsplit_once(':').expect("URL has a port");
            format!("{host}:{p}")
        }
        None => base.to_string(),
    };
    format!("{base}/{db}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {url}: {e}. The backend tests need it: \
                 `./scripts/test` starts the local server, or set CORRAL_TEST_DATABASE_URL"
            )
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database of the test's own, dropped (with its connections) when this is dropped.
pub struct TestDb {
    pub name: String,
    admin: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin = admin_url();
        let name = format!(
            "corral_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        connect(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb { name, admin }
    }

    /// The `DATABASE_URL` of this database.
    pub fn url(&self) -> String {
        with_database(&self.admin, &self.name, None)
    }

    /// The same database reached through another local port (a [`TcpProxy`]).
    pub fn url_via(&self, port: u16) -> String {
        with_database(&self.admin, &self.name, Some(port))
    }

    /// The server address (host:port) of the admin URL, for a proxy to forward to.
    pub fn server_addr(&self) -> String {
        let config: tokio_postgres::Config = self.admin.parse().expect("admin URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }

    /// Applies the schema with the real `backend migrate` (for tests of the gateway's ledger,
    /// which writes to the backend's `usage_events`).
    pub fn migrate(&self) {
        let out = Command::new(crate::gateway::binary("backend"))
            .arg("migrate")
            .env("DATABASE_URL", self.url())
            .output()
            .expect("run backend migrate");
        assert!(
            out.status.success(),
            "backend migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sum of prompt + completion tokens in `usage_events` for `org`, and the row count.
    pub async fn ledger(&self, org: &str) -> (i64, i64) {
        let row = self
            .client()
            .await
            .query_one(
                "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0)::int8, COUNT(*) FROM usage_events WHERE org_id = $1",
                &[&org],
            )
            .await
            .expect("ledger query");
        (row.get(0), row.get(1))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside (or at the end of) the test's runtime: use a runtime of our own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = done.join();
    }
}

/// Variables a test's backend must not inherit from the developer's shell.
const CLEARED_ENV: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "BACKEND_LISTEN",
    "GATEWAY_URL",
    "JWT_SECRET",
    "API_KEY_PEPPER",
    "JWT_PUBLIC_KEY_FILE",
    "JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "ORG_SOFT_TOKEN_LIMIT",
    "ORG_HARD_TOKEN_LIMIT",
    "RETENTION_DAYS",
    "RETENTION_INTERVAL_S",
    "LOG_LEVEL",
    "LOG_FORMAT",
];

#[derive(Clone, Default)]
pub struct BackendBuilder {
    database_url: Option<String>,
    gateway_url: Option<String>,
    toml: String,
    env: Vec<(String, String)>,
    port: Option<u16>,
}

impl BackendBuilder {
    pub fn database(mut self, url: &str) -> Self {
        self.database_url = Some(url.into());
        self
    }

    pub fn gateway(mut self, url: &str) -> Self {
        self.gateway_url = Some(url.into());
        self
    }

    /// TOML for the generated config file (whole sections, e.g. `"[retention]\ndays = 1"`).
    pub fn toml(mut self, text: &str) -> Self {
        self.toml.push_str(text);
        self.toml.push('\n');
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `backend --config <generated> <args...>` with this builder's environment, not started.
    /// The config file lives in `dir`.
    pub fn command(&self, dir: &std::path::Path, args: &[&str]) -> Command {
        let config = dir.join("backend.toml");
        let mut text = String::from("[server]\ngrace_period_s = 2\n");
        text.push_str(&self.toml);
        std::fs::write(&config, text).expect("write backend config");
        let mut cmd = Command::new(binary("backend"));
        cmd.arg("--config").arg(&config).args(args);
        for key in CLEARED_ENV {
            cmd.env_remove(key);
        }
        cmd.env("JWT_SECRET", SECRET);
        if let Some(url) = &self.database_url {
            cmd.env("DATABASE_URL", url);
        }
        if let Some(url) = &self.gateway_url {
            cmd.env("GATEWAY_URL", url);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Runs a one-shot command (`migrate`, `seed`...) to its end.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        let dir = tempfile::tempdir().expect("temp dir");
        self.command(dir.path(), args)
            .output()
            .expect("run backend")
    }

    /// Starts `backend serve` and waits until `/healthz` answers.
    pub async fn start(self) -> BackendProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = self.port.unwrap_or_else(free_port);
        let log_path = dir.path().join("backend.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = self.command(dir.path(), &["serve"]);
        cmd.env("BACKEND_LISTEN", format!("127.0.0.1:{port}"));
        cmd.stdout(Stdio::from(log.try_clone().expect("log clone")))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("spawn backend");
        let mut be = BackendProcess {
            child: Some(child),
            port,
            _dir: dir,
            log_path,
        };
        be.wait_healthy().await;
        be
    }
}

/// A running `backend serve`.
pub struct BackendProcess {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl BackendProcess {
    pub fn builder() -> BackendBuilder {
        BackendBuilder::default()
    }

    /// A backend on `db`, migrated first, that mints and checks API keys with [`PEPPER`]
    /// (the gateway in these tests is given the same one).
    pub fn keyed(db: &TestDb) -> BackendBuilder {
        db.migrate();
        Self::builder()
            .database(&db.url())
            .env("API_KEY_PEPPER", PEPPER)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

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
                        "backend exited with {status} before it was healthy:\n{}",
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
                "backend not healthy after 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait for the exit (the test config's grace period is 2 s).
    pub async fn stop(mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.kill();
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP hop to `target` that a test can cut (every open connection closed, new ones closed
/// as soon as they arrive) and restore: a database outage, as the backend sees it.
pub struct TcpProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let target = target.to_string();
        let accept = tokio::spawn({
            let (up, conns) = (Arc::clone(&up), Arc::clone(&conns));
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().expect("proxy lock").push(task);
                }
            }
        });
        TcpProxy {
            port,
            up,
            conns,
            accept,
        }
    }

    /// Closes every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().expect("proxy lock").drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.conns.lock().expect("proxy lock").drain(..) {
            task.abort();
        }
    }
}

/// A token for `user` in `org`, with an optional role.
pub fn token(org: &str, user: &str, role: Option<&str>) -> String {
    let mut claims = jwt::claims(org, user, 3600);
    if let Some(role) = role {
        claims["role"] = Value::from(role);
    }
    jwt::hs256(SECRET, &claims)
}

/// A JSON client for one caller.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

/// A response read whole: status, headers and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        }
    }

    /// A client for `user` of `org` (`role` e.g. `Some("admin")`).
    pub fn as_user(base: &str, org: &str, user: &str, role: Option<&str>) -> Api {
        Api::new(base, Some(token(org, user, role)))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("send request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("read body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(reqwest::Method::PATCH, path).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Creates a conversation and returns its id.
    pub async fn create_conversation(&self, title: &str, model: &str) -> String {
        let r = self
            .post(
                "/api/conversations",
                &serde_json::json!({"title": title, "model": model}),
            )
            .await;
        assert_eq!(r.status, 201, "create conversation: {:?}", r.body);
        r.body["id"].as_str().expect("id").to_string()
    }
}
