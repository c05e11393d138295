//! `backend-bench`: throughput of the conversations backend, measured through the gateway
//! as a front end uses it.
//!
//! Starts its own stack (a fresh PostgreSQL database, a fake Ollama, the gateway with JWT
//! auth, the backend) from the binaries next to this one (`bench/backend.sh` builds them in
//! release), then measures, each for `--duration` seconds with closed-loop workers:
//!
//! - conversation list: `GET /api/conversations?limit=20` for a user with
//!   `--conversations` conversations;
//! - message post: `POST /api/conversations/{id}/messages`, reading the streamed reply to
//!   its end (the fake answers `--tokens` tokens with no delay, so this measures the
//!   backend and gateway, not a model); each worker is its own user and starts a new
//!   conversation every 20 turns (that create is counted in the turn's time).
//!
//! Prints one `key=value` line per measurement.

use std::time::{Duration, Instant};

use clap::Parser;
use corral_tests::backend::{token, Api, BackendProcess, TestDb, SECRET};
use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::{free_port, GatewayProcess};
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "backend-bench",
    about = "Conversation list and message post throughput"
)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent workers for the list measurement.
    #[arg(long, default_value_t = 32)]
    list_concurrency: usize,
    /// Concurrent workers for the message-post measurement.
    #[arg(long, default_value_t = 16)]
    post_concurrency: usize,
    /// Conversations the listing user owns.
    #[arg(long, default_value_t = 1000)]
    conversations: usize,
    /// Tokens in each fake reply.
    #[arg(long, default_value_t = 16)]
    tokens: usize,
    /// Also measure the list straight against the backend (no gateway).
    #[arg(long)]
    direct: bool,
}

struct Run {
    ok: u64,
    errors: u64,
    hist: Histogram<u64>,
    elapsed: Duration,
}

impl Run {
    fn print(&self, name: &str, concurrency: usize) {
        let rps = self.ok as f64 / self.elapsed.as_secs_f64();
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "bench={name} concurrency={concurrency} requests={} errors={} rps={rps:.0} \
             p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            self.ok,
            self.errors,
            ms(0.5),
            ms(0.99),
            self.hist.max() as f64 / 1000.0
        );
    }
}

/// Runs `op` in `concurrency` closed loops for `duration`; `op(worker, i)` returns success.
async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let (mut ok, mut errors, mut i) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(w, i).await {
                    ok += 1;
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (ok, errors, hist)
        }));
    }
    let mut run = Run {
        ok: 0,
        errors: 0,
        hist: Histogram::new(3).expect("histogram"),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (ok, errors, hist) = t.await.expect("worker");
        run.ok += ok;
        run.errors += errors;
        run.hist.add(hist).expect("merge");
    }
    run.elapsed = start.elapsed();
    run
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let duration = Duration::from_secs(args.duration);
    let db = TestDb::create().await;
    let fake = FakeOllama::builder().tokens(args.tokens).start().await;
    let gw_port = free_port();
    // The gateway's per-org limits would measure themselves, not the backend: lift them.
    let policies = tempfile::tempdir().expect("policy dir");
    std::fs::write(
        policies.path().join("bench.toml"),
        "[defaults]\nrequests_per_minute = 0\nuser_requests_per_minute = 0\n\
         max_concurrent_streams = 10000\n",
    )
    .expect("write policy");
    let backend = BackendProcess::builder()
        .database(&db.url())
        .gateway(&format!("http://127.0.0.1:{gw_port}"))
        .env("LOG_LEVEL", "warn")
        .start()
        .await;
    let gateway = GatewayProcess::builder()
        .instances(&[fake.url()])
        .port(gw_port)
        .pool("max_inflight_per_instance = 256")
        .env("JWT_SECRET", SECRET)
        .env("BACKEND_URL", &backend.url())
        .env(
            "POLICIES_DIR",
            policies.path().to_str().expect("utf-8 path"),
        )
        .env("LOG_LEVEL", "warn")
        .start()
        .await;
    gateway.wait_pool_healthy(1).await;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let tok = token("acme", "alice", None);
    let mut alice = Api::new(&gateway.url(), Some(tok.clone()));
    alice.http = http.clone();
    // Seed the listing user's conversations straight into the database (fast, and not
    // what is measured).
    db.client()
        .await
        .execute(
            "INSERT INTO conversations (id, org_id, user_id, title, model, created_at, updated_at) \
             SELECT gen_random_uuid(), 'acme', 'alice', 'conversation ' || i, 'llama3:8b', \
                    now() - i * interval '1 second', now() - i * interval '1 second' \
             FROM generate_series(1, $1::int) AS i",
            &[&(args.conversations as i32)],
        )
        .await
        .expect("seed conversations");
    println!(
        "setup conversations={} tokens_per_reply={} duration_s={}",
        args.conversations, args.tokens, args.duration
    );

    let bases = if args.direct {
        vec![
            ("list_via_gateway", gateway.url()),
            ("list_direct", backend.url()),
        ]
    } else {
        vec![("list_via_gateway", gateway.url())]
    };
    for (name, base) in bases {
        let url = format!("{base}/api/conversations?limit=20");
        let (http, tok) = (http.clone(), tok.clone());
        let run = closed_loop(args.list_concurrency, duration, move |_, _| {
            let (http, url, tok) = (http.clone(), url.clone(), tok.clone());
            async move {
                match http.get(&url).bearer_auth(&tok).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        })
        .await;
        run.print(name, args.list_concurrency);
    }

    // Each poster is its own user with its own conversation (a new one every 20 turns, so
    // the history sent to the model stays short), so lists and row locks do not collide.
    let base = gateway.url();
    let current: std::sync::Arc<Vec<tokio::sync::Mutex<Option<String>>>> = std::sync::Arc::new(
        (0..args.post_concurrency)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect(),
    );
    let run = closed_loop(args.post_concurrency, duration, move |w, i| {
        let (http, base, current) = (http.clone(), base.clone(), current.clone());
        async move {
            let tok = token("acme", &format!("poster{w}"), None);
            let mut slot = current[w].lock().await;
            if i % 20 == 0 || slot.is_none() {
                let mut api = Api::new(&base, Some(tok.clone()));
                api.http = http.clone();
                *slot = Some(api.create_conversation("bench", "llama3:8b").await);
            }
            let id = slot.clone().unwrap_or_default();
            let r = http
                .post(format!("{base}/api/conversations/{id}/messages"))
                .bearer_auth(&tok)
                .json(&json!({"content": "benchmark message, please answer briefly"}))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => r
                    .text()
                    .await
                    .is_ok_and(|body| body.contains("\"done\":true")),
                _ => false,
            }
        }
    })
    .await;
    run.print("message_post_via_gateway", args.post_concurrency);
    backend.stop().await;
    gateway.stop().await;
}
