//! Cache-aware routing through the real gateway, in front of simulated GPUs (the fake Ollama's
//! GPU model: per-slot prompt caches, Ollama's counters). A conversation's turns go back to
//! the instance holding its prompt; a new conversation, or one whose owner is too busy or
//! gone, goes by load; a shared system prompt alone pins nothing.

use std::time::Duration;

use corral_tests::fake_ollama::{FakeOllama, GpuModel};
use corral_tests::gateway::GatewayProcess;
use corral_tests::support::{metric_sum, metrics};
use serde_json::{json, Value};

const MODEL: &str = "llama3:8b";
const SYSTEM: &str = "You are a careful assistant who answers in full sentences and cites sources.";

async fn gpus(n: usize, parallel: usize) -> Vec<FakeOllama> {
    let mut out = Vec::new();
    for _ in 0..n {
        let gpu = GpuModel {
            num_parallel: parallel,
            time_scale: 0.05,
            ..GpuModel::default()
        };
        let f = FakeOllama::builder()
            .models(&[MODEL])
            .loaded(&[MODEL])
            .tokens(8)
            .gpu(gpu)
            .start()
            .await;
        out.push(f);
    }
    out
}

async fn gateway(instances: &[FakeOllama], balance: &str) -> GatewayProcess {
    let urls: Vec<String> = instances.iter().map(FakeOllama::url).collect();
    let gw = GatewayProcess::builder()
        .instances(&urls)
        .env("GATEWAY_POOL_BALANCE", balance)
        .start()
        .await;
    gw.wait_pool_healthy(instances.len()).await;
    gw
}

fn prompts(fakes: &[FakeOllama]) -> Vec<u64> {
    fakes
        .iter()
        .map(|f| f.gpu_stats().map_or(0, |s| s.prompts))
        .collect()
}

/// One conversation: its messages so far.
struct Conversation {
    messages: Vec<Value>,
}

impl Conversation {
    fn new(topic: &str) -> Conversation {
        Conversation {
            messages: vec![
                json!({"role": "system", "content": SYSTEM}),
                json!({"role": "user", "content": format!("Tell me about {topic}, at length please. {}", "Details matter. ".repeat(40))}),
            ],
        }
    }

    /// Sends the next turn; returns the serving instance's index and its prompt_eval_count.
    async fn turn(&mut self, gw: &GatewayProcess, fakes: &[FakeOllama]) -> (usize, u64) {
        let before = prompts(fakes);
        let r = reqwest::Client::new()
            .post(format!("{}/api/chat", gw.url()))
            .json(&json!({"model": MODEL, "messages": self.messages, "stream": false}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        let after = prompts(fakes);
        let served = (0..fakes.len())
            .find(|i| after[*i] > before[*i])
            .expect("one instance served it");
        self.messages.push(v["message"].clone());
        self.messages
            .push(json!({"role": "user", "content": "And then? Go on, with more detail."}));
        (served, v["prompt_eval_count"].as_u64().unwrap_or(0))
    }
}

#[tokio::test]
async fn a_conversation_returns_to_its_instance_and_reuses_its_cache() {
    let fakes = gpus(4, 4).await;
    let gw = gateway(&fakes, "cache_aware").await;
    let mut conv = Conversation::new("rivers");
    let (first, evaluated_first) = conv.turn(&gw, &fakes).await;
    for _ in 0..4 {
        let (served, evaluated) = conv.turn(&gw, &fakes).await;
        assert_eq!(
            served, first,
            "every turn on the instance holding the history"
        );
        assert!(
            evaluated * 5 < evaluated_first,
            "a cached turn evaluates only what is new: {evaluated} vs {evaluated_first}"
        );
    }
    // Different conversations spread (each is new: a miss, placed by load).
    let mut used = std::collections::HashSet::from([first]);
    for topic in ["mountains", "deserts", "oceans"] {
        used.insert(Conversation::new(topic).turn(&gw, &fakes).await.0);
    }
    assert!(used.len() >= 3, "new conversations spread: {used:?}");
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(&m, "corral_affinity_total", &[("result", "hit")]),
        4.0
    );
    assert_eq!(
        metric_sum(&m, "corral_affinity_total", &[("result", "miss")]),
        4.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_shared_system_prompt_alone_pins_nothing() {
    let fakes = gpus(4, 4).await;
    let gw = gateway(&fakes, "cache_aware").await;
    let mut used = std::collections::HashSet::new();
    for i in 0..8 {
        let (served, _) = Conversation::new(&format!("topic {i}"))
            .turn(&gw, &fakes)
            .await;
        used.insert(served);
    }
    assert_eq!(
        used.len(),
        4,
        "eight new conversations with one system prompt: {used:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn least_busy_ignores_the_cache() {
    let fakes = gpus(4, 4).await;
    let gw = gateway(&fakes, "least_busy").await;
    let mut conv = Conversation::new("rivers");
    let mut used = std::collections::HashSet::new();
    for _ in 0..4 {
        used.insert(conv.turn(&gw, &fakes).await.0);
    }
    assert!(used.len() > 1, "turns rotate over idle instances: {used:?}");
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(&m, "corral_affinity_total", &[("result", "none")]),
        4.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_burst_of_one_hot_conversation_is_spread_within_the_load_bound() {
    let fakes = gpus(4, 8).await;
    let gw = gateway(&fakes, "cache_aware").await;
    let mut conv = Conversation::new("rivers");
    let (owner, _) = conv.turn(&gw, &fakes).await;
    // Twenty copies of its next turn at once.
    let client = reqwest::Client::new();
    let body = json!({"model": MODEL, "messages": conv.messages, "stream": false});
    let sends = (0..20).map(|_| {
        client
            .post(format!("{}/api/chat", gw.url()))
            .json(&body)
            .send()
    });
    let before = prompts(&fakes);
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.expect("send").status(), 200);
    }
    let after = prompts(&fakes);
    let got: Vec<u64> = (0..4).map(|i| after[i] - before[i]).collect();
    // The owner takes at most ceil(1.25 x mean + 1) at once; the rest spread.
    assert!(got[owner] >= 2, "the owner still takes its share: {got:?}");
    assert!(got[owner] < 20, "bounded load sheds the rest: {got:?}");
    assert!(
        got.iter().filter(|n| **n > 0).count() >= 3,
        "spread: {got:?}"
    );
    let m = metrics(&gw.url()).await;
    assert!(metric_sum(&m, "corral_affinity_total", &[("result", "overloaded")]) >= 1.0);
    let max_busy = fakes
        .iter()
        .map(|f| f.gpu_stats().map_or(0, |s| s.max_busy_slots))
        .max()
        .unwrap_or(0);
    assert!(max_busy <= 8, "no instance beyond its slots: {max_busy}");
    gw.stop().await;
}

#[tokio::test]
async fn a_session_header_pins_a_conversation_and_an_owner_that_dies_is_replaced() {
    let fakes = gpus(3, 4).await;
    let gw = gateway(&fakes, "cache_aware").await;
    let mut conv = Conversation::new("rivers");
    let (owner, _) = conv.turn(&gw, &fakes).await;
    assert_eq!(conv.turn(&gw, &fakes).await.0, owner);
    // The owner dies: the next turn goes elsewhere and is remembered there.
    let mut fakes = fakes;
    let dead = fakes.remove(owner);
    dead.stop().await;
    let live = fakes.clone();
    let probe_all = [live.as_slice()].concat();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (moved, evaluated_moved) = conv.turn(&gw, &probe_all).await;
    let (again, evaluated_again) = conv.turn(&gw, &probe_all).await;
    assert_eq!(again, moved, "remembered on its new instance");
    assert!(
        evaluated_again * 5 < evaluated_moved,
        "{evaluated_again} vs {evaluated_moved}"
    );

    // A client's own session key: two different prompts, one instance.
    let send = |content: &str| {
        reqwest::Client::new()
            .post(format!("{}/api/chat", gw.url()))
            .header("X-Corral-Session", "chat-42")
            .json(&json!({"model": MODEL, "stream": false,
                "messages": [{"role": "user", "content": content}]}))
            .send()
    };
    let before = prompts(&probe_all);
    assert_eq!(send("first question").await.expect("send").status(), 200);
    let mid = prompts(&probe_all);
    assert_eq!(
        send("an unrelated second question")
            .await
            .expect("send")
            .status(),
        200
    );
    let after = prompts(&probe_all);
    let first = (0..2).find(|i| mid[*i] > before[*i]);
    let second = (0..2).find(|i| after[*i] > mid[*i]);
    assert_eq!(first, second, "one session, one instance");
    gw.stop().await;
}

const SECRET: &str = "routing-cache-secret-routing-cache-secret";

#[tokio::test]
async fn two_replicas_sharing_redis_send_a_conversation_to_one_instance() {
    let mut redis = corral_tests::redis_server::RedisServer::start();
    let prefix = corral_tests::redis_server::unique_prefix();
    let fakes = gpus(4, 4).await;
    let urls: Vec<String> = fakes.iter().map(FakeOllama::url).collect();
    let start = || {
        GatewayProcess::builder()
            .instances(&urls)
            .env("JWT_SECRET", SECRET)
            .env("REDIS_URL", &redis.url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .start()
    };
    let (g1, g2) = (start().await, start().await);
    g1.wait_pool_healthy(4).await;
    g2.wait_pool_healthy(4).await;
    let token = corral_tests::jwt::hs256(SECRET, &corral_tests::jwt::claims("acme", "bob", 600));
    let turn = |gw: &GatewayProcess, conv: &Conversation| {
        let body = json!({"model": MODEL, "messages": conv.messages, "stream": false});
        reqwest::Client::new()
            .post(format!("{}/api/chat", gw.url()))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let mut conv = Conversation::new("rivers");
    let mut served = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        let before = prompts(&fakes);
        let r = turn(gw, &conv).await.expect("send");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        let after = prompts(&fakes);
        served.push((0..4).find(|i| after[*i] > before[*i]).expect("served"));
        conv.messages.push(v["message"].clone());
        conv.messages
            .push(json!({"role": "user", "content": "More."}));
        // The settlement that names the owner goes out after the reply.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served.iter().all(|s| *s == served[0]),
        "turns alternating between replicas stay on one instance: {served:?}"
    );
    for g in [&g1, &g2] {
        let m = metrics(&g.url()).await;
        assert!(metric_sum(&m, "corral_affinity_total", &[("result", "hit")]) >= 2.0);
    }

    // Redis stops: requests still succeed, routed by each replica's own index.
    redis.stop();
    for i in 0..4 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        let r = turn(gw, &conv).await.expect("send");
        assert_eq!(r.status(), 200, "Redis away: served anyway");
        let _ = r.text().await;
    }
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn a_model_loaded_nowhere_goes_where_loading_evicts_least_and_is_counted() {
    // One instance holds llama3 loaded; the other holds nothing: a request for another model
    // loads it on the empty one rather than evicting llama3.
    let gpu = GpuModel {
        max_loaded_models: 1,
        time_scale: 0.05,
        ..GpuModel::default()
    };
    let mut fakes = Vec::new();
    for loaded in [&[MODEL][..], &[][..]] {
        let f = FakeOllama::builder()
            .models(&[MODEL, "qwen2.5:7b"])
            .loaded(loaded)
            .tokens(4)
            .gpu(gpu.clone())
            .start()
            .await;
        fakes.push(f);
    }
    let gw = gateway(&fakes, "cache_aware").await;
    for _ in 0..3 {
        let before = prompts(&fakes);
        let r = reqwest::Client::new()
            .post(format!("{}/api/chat", gw.url()))
            .json(&json!({"model": "qwen2.5:7b", "stream": false,
                "messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let after = prompts(&fakes);
        assert!(
            after[1] > before[1],
            "the instance with room serves it: {after:?}"
        );
    }
    assert_eq!(
        fakes[0].gpu_stats().map(|s| s.evictions),
        Some(0),
        "llama3 stays loaded"
    );
    let m = metrics(&gw.url()).await;
    let loads = metric_sum(&m, "corral_model_loads_total", &[]);
    assert!(loads >= 1.0, "the first request caused a load");
    assert!(
        metric_sum(
            &m,
            "corral_routing_decision_seconds_count",
            &[("balance", "cache_aware")]
        ) >= 3.0,
        "every placement's cost is measured"
    );
    gw.stop().await;
}

// Waiting for a warm instance rather than loading the model on a free one (issue 12, item 3):
// instance A has the model loaded, B has it only on disk and takes LOAD_MS to load it. Real
// time (time_scale 1) so the load estimate and the simulator's loads are on one clock.

/// The simulator's load time and the gateway's configured estimate of it.
const LOAD_MS: u64 = 3_000;

/// A (index 0) with the model loaded, B (index 1) without; two slots each, one model at a
/// time, replies of up to 2,000 tokens at 10 ms each (requests cap them with `num_predict`).
async fn warm_and_cold() -> Vec<FakeOllama> {
    let gpu = GpuModel {
        num_parallel: 2,
        max_loaded_models: 1,
        load_ms: LOAD_MS as f64,
        gen_ms_per_token: 10.0,
        time_scale: 1.0,
        ..GpuModel::default()
    };
    let mut fakes = Vec::new();
    for loaded in [&[MODEL][..], &[][..]] {
        let f = FakeOllama::builder()
            .models(&[MODEL])
            .loaded(loaded)
            .tokens(2_000)
            .gpu(gpu.clone())
            .start()
            .await;
        fakes.push(f);
    }
    fakes
}

async fn estimating_gateway(instances: &[FakeOllama], estimate_ms: u64) -> GatewayProcess {
    let urls: Vec<String> = instances.iter().map(FakeOllama::url).collect();
    let gw = GatewayProcess::builder()
        .instances(&urls)
        .pool(&format!(
            "max_inflight_per_instance = 2\nmodel_load_estimate_ms = {estimate_ms}"
        ))
        .start()
        .await;
    gw.wait_pool_healthy(instances.len()).await;
    gw
}

/// A chat of `tokens` reply tokens; returns its status.
async fn chat_of(gw: &GatewayProcess, content: &str, tokens: u64) -> u16 {
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .json(
            &json!({"model": MODEL, "stream": false, "options": {"num_predict": tokens},
            "messages": [{"role": "user", "content": content}]}),
        )
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

/// Teaches the gateway how long a short request holds its slot (about 0.2 s): three, one at a
/// time, which the free warm instance A serves.
async fn learn_short_requests(gw: &GatewayProcess, fakes: &[FakeOllama]) {
    for i in 0..3 {
        assert_eq!(chat_of(gw, &format!("warm-up {i}"), 20).await, 200);
    }
    assert_eq!(prompts(fakes), vec![3, 0], "the warm instance served them");
}

/// Fills A's two slots with requests of `tokens` tokens; returns once both run on its GPU.
async fn fill_warm_instance(
    gw: &GatewayProcess,
    fakes: &[FakeOllama],
    tokens: u64,
) -> Vec<tokio::task::JoinHandle<u16>> {
    let fill: Vec<_> = (0..2)
        .map(|i| {
            let url = gw.url();
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(format!("{url}/api/chat"))
                    .json(&json!({"model": MODEL, "stream": false,
                        "options": {"num_predict": tokens},
                        "messages": [{"role": "user", "content": format!("fill {i}")}]}))
                    .send()
                    .await
                    .expect("send");
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                status
            })
        })
        .collect();
    let a = fakes[0].clone();
    corral_tests::support::eventually(Duration::from_secs(20), "A's two slots busy", || {
        let busy = a.gpu_stats().map_or(0, |s| s.busy_slots);
        async move { busy == 2 }
    })
    .await;
    fill
}

#[tokio::test]
async fn a_request_waits_for_a_warm_slot_that_frees_sooner_than_a_load() {
    let fakes = warm_and_cold().await;
    let gw = estimating_gateway(&fakes, LOAD_MS).await;
    learn_short_requests(&gw, &fakes).await;
    // A is full with two requests of about one second; B is free but would load for 3 s.
    let fill = fill_warm_instance(&gw, &fakes, 100).await;
    let started = std::time::Instant::now();
    assert_eq!(chat_of(&gw, "the probe", 5).await, 200);
    let took = started.elapsed();
    for f in fill {
        assert_eq!(f.await.expect("fill"), 200);
    }
    assert_eq!(prompts(&fakes), vec![6, 0], "the probe waited for A");
    let b = fakes[1].gpu_stats().expect("gpu");
    assert_eq!((b.loads, b.prompts), (0, 0), "B never loaded the model");
    assert!(
        took < Duration::from_millis(LOAD_MS),
        "waiting for A beat a load on B: {took:?}"
    );
    let m = metrics(&gw.url()).await;
    assert_eq!(metric_sum(&m, "corral_model_loads_total", &[]), 0.0);
    assert_eq!(
        metric_sum(&m, "corral_warm_waits_total", &[("result", "warm")]),
        1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_request_goes_cold_once_the_warm_slots_stay_busy_for_the_load_estimate() {
    let fakes = warm_and_cold().await;
    let gw = estimating_gateway(&fakes, LOAD_MS).await;
    // Short requests taught the gateway that A's slots free quickly, but A is now full with
    // requests of about 20 s: the probe waits the load estimate (3 s), no longer, then loads
    // the model on B.
    learn_short_requests(&gw, &fakes).await;
    let fill = fill_warm_instance(&gw, &fakes, 2_000).await;
    let started = std::time::Instant::now();
    let b = fakes[1].clone();
    let placed = tokio::spawn(async move {
        while b.gpu_stats().map_or(0, |s| s.loads) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    });
    assert_eq!(chat_of(&gw, "the probe", 5).await, 200);
    let took = started.elapsed();
    let placed = placed.await.expect("B loaded the model");
    assert_eq!(prompts(&fakes), vec![5, 1], "the probe ran on B");
    assert!(
        placed >= Duration::from_millis(LOAD_MS - 500),
        "it waited for a warm slot first: placed after {placed:?}"
    );
    assert!(
        placed < Duration::from_millis(LOAD_MS + 2_500),
        "no longer than the load estimate (and a margin for a busy machine): {placed:?}"
    );
    assert!(
        took < Duration::from_millis(2 * LOAD_MS + 4_000),
        "the estimate, the load, the reply: {took:?}"
    );
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(&m, "corral_warm_waits_total", &[("result", "cold")]),
        1.0
    );
    let b_url = fakes[1].url();
    assert_eq!(
        metric_sum(
            &m,
            "corral_model_loads_total",
            &[("instance", b_url.as_str())]
        ),
        1.0
    );
    for f in fill {
        f.abort();
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_cold_request_teaches_the_load_estimate() {
    // One instance without the model: the first request loads it (3 s); the gateway was told
    // 1 s and moves toward what it saw.
    let gpu = GpuModel {
        load_ms: LOAD_MS as f64,
        time_scale: 1.0,
        ..GpuModel::default()
    };
    let fake = FakeOllama::builder()
        .models(&[MODEL])
        .tokens(4)
        .gpu(gpu)
        .start()
        .await;
    let gw = estimating_gateway(std::slice::from_ref(&fake), 1_000).await;
    let estimate = |m: &prometheus_parse::Scrape| {
        metric_sum(m, "corral_model_load_estimate_seconds", &[("model", MODEL)])
    };
    assert_eq!(
        estimate(&metrics(&gw.url()).await),
        1.0,
        "the configured value"
    );
    let started = std::time::Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .json(&json!({"model": MODEL, "stream": true,
            "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let mut r = r;
    let first = r.chunk().await.expect("chunk").map(|_| started.elapsed());
    while r.chunk().await.expect("chunk").is_some() {}
    let first = first.expect("a first token");
    assert!(
        first >= Duration::from_millis(LOAD_MS),
        "it loaded: {first:?}"
    );
    assert_eq!(fake.gpu_stats().map(|s| s.loads), Some(1));
    // One sample moves the estimate 30% of the way (see gateway/src/pool/estimates.rs).
    let learned = estimate(&metrics(&gw.url()).await);
    let at_most = 0.7 * 1.0 + 0.3 * first.as_secs_f64() + 0.01;
    assert!(
        learned > 1.5 && learned <= at_most,
        "moved toward {first:?}: {learned}"
    );
    gw.stop().await;
}

/// A second model, for requests that must not touch the first one's prompt caches.
const OTHER: &str = "qwen2.5:7b";

/// Two instances with both models loaded and one slot per model; replies of 10 ms a token.
async fn one_slot_gpus() -> Vec<FakeOllama> {
    let gpu = GpuModel {
        num_parallel: 1,
        max_loaded_models: 2,
        gen_ms_per_token: 10.0,
        time_scale: 1.0,
        ..GpuModel::default()
    };
    let mut fakes = Vec::new();
    for _ in 0..2 {
        let f = FakeOllama::builder()
            .models(&[MODEL, OTHER])
            .loaded(&[MODEL, OTHER])
            .tokens(400)
            .gpu(gpu.clone())
            .start()
            .await;
        fakes.push(f);
    }
    fakes
}

/// Sends a chat and returns its reply, checking the status.
async fn post_chat(url: String, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/chat"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

fn busy_slots(fakes: &[FakeOllama]) -> Vec<usize> {
    fakes
        .iter()
        .map(|f| f.gpu_stats().map_or(0, |s| s.busy_slots))
        .collect()
}

/// Starts `body` and waits until it runs on an instance other than `taken`; returns which.
async fn occupy(
    gw: &GatewayProcess,
    fakes: &[FakeOllama],
    body: Value,
    taken: Option<usize>,
) -> (usize, tokio::task::JoinHandle<Value>) {
    let task = tokio::spawn(post_chat(gw.url(), body));
    let mut at = None;
    for _ in 0..200 {
        at = (0..fakes.len()).find(|i| Some(*i) != taken && busy_slots(fakes)[*i] == 1);
        if at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (at.expect("the request runs on an instance"), task)
}

async fn queued(gw: &GatewayProcess) -> f64 {
    metric_sum(&metrics(&gw.url()).await, "corral_queue_waiting", &[])
}

/// Two conversations, one on each instance; both instances busy with long requests of the
/// other model; then the conversations' next turns queue, the one whose instance frees
/// first queued last. Returns the prompt tokens each queued turn evaluated, with each
/// conversation's first-turn count, and the affinity hits.
async fn saturated_turns(window: u32) -> (Vec<(u64, u64)>, f64) {
    let fakes = one_slot_gpus().await;
    let urls: Vec<String> = fakes.iter().map(FakeOllama::url).collect();
    let gw = GatewayProcess::builder()
        .instances(&urls)
        .pool(&format!(
            "max_inflight_per_instance = 1\naffinity_queue_window = {window}"
        ))
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    let chat = |c: &Conversation, model: &str, tokens: u64| {
        json!({"model": model, "messages": c.messages, "stream": false,
            "options": {"num_predict": tokens}})
    };
    // First turns: while the first runs, the second takes the other instance.
    let mut convs = [Conversation::new("rivers"), Conversation::new("mountains")];
    let (first, task) = occupy(&gw, &fakes, chat(&convs[0], MODEL, 30), None).await;
    let second = post_chat(gw.url(), chat(&convs[1], MODEL, 5)).await;
    let replies = [task.await.expect("first turn"), second];
    let mut evaluated_first = Vec::new();
    for (c, v) in convs.iter_mut().zip(&replies) {
        evaluated_first.push(v["prompt_eval_count"].as_u64().unwrap_or(0));
        c.messages.push(v["message"].clone());
        c.messages
            .push(json!({"role": "user", "content": "And then? Go on, with more detail."}));
    }
    // Long requests of the other model fill both instances: the one on `soon` ends first.
    let stranger = |topic: &str, tokens: u64| {
        json!({"model": OTHER, "stream": false, "options": {"num_predict": tokens},
            "messages": [{"role": "user", "content": topic}]})
    };
    let (soon, short) = occupy(&gw, &fakes, stranger("short", 80), None).await;
    let (_, long) = occupy(&gw, &fakes, stranger("long", 250), Some(soon)).await;
    // The conversation living on the other instance queues first; the second one's turn is
    // long, so that if it takes `soon` the first can only run where the long request ends.
    let order = if first == soon { [1, 0] } else { [0, 1] };
    let mut tasks = Vec::new();
    for (n, c) in order.iter().enumerate() {
        let tokens = [5, 250][n];
        tasks.push(tokio::spawn(post_chat(
            gw.url(),
            chat(&convs[*c], MODEL, tokens),
        )));
        corral_tests::support::eventually(Duration::from_secs(5), "the turn queued", || {
            let gw = &gw;
            async move { queued(gw).await == (n + 1) as f64 }
        })
        .await;
    }
    let mut out = Vec::new();
    for (task, c) in tasks.into_iter().zip(order) {
        let v = task.await.expect("queued turn");
        out.push((
            v["prompt_eval_count"].as_u64().unwrap_or(0),
            evaluated_first[c],
        ));
    }
    for t in [short, long] {
        t.await.expect("long request");
    }
    let hits = metric_sum(
        &metrics(&gw.url()).await,
        "corral_affinity_total",
        &[("result", "hit")],
    );
    gw.stop().await;
    (out, hits)
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_queued_turn_whose_cache_it_holds() {
    let (turns, hits) = saturated_turns(8).await;
    for (evaluated, first) in &turns {
        assert!(
            evaluated * 5 < *first,
            "each queued turn reuses its cache: {turns:?}"
        );
    }
    assert_eq!(hits, 2.0, "both queued turns went to their instance");

    // Strictly first come, first served, the first freed slot takes the wrong turn, whose
    // short reply then frees it for the other one: its instance, but no longer its cache.
    let (turns, _) = saturated_turns(0).await;
    assert!(
        turns
            .iter()
            .all(|(evaluated, first)| evaluated * 5 >= *first),
        "without the hand-over both are evaluated in full: {turns:?}"
    );
}

/// What loading the other model costs on [`one_model_gpu`], in ms.
const SWITCH_MS: f64 = 300.0;

/// One instance that holds one model at a time (MODEL loaded, OTHER available), one slot.
async fn one_model_gpu() -> FakeOllama {
    one_model_gpu_with(&[MODEL, OTHER], MODEL).await
}

/// One instance with `models`, `loaded` loaded, that holds one model at a time; one slot.
async fn one_model_gpu_with(models: &[&str], loaded: &str) -> FakeOllama {
    let gpu = GpuModel {
        num_parallel: 1,
        max_loaded_models: 1,
        load_ms: SWITCH_MS,
        gen_ms_per_token: 10.0,
        time_scale: 1.0,
        ..GpuModel::default()
    };
    FakeOllama::builder()
        .models(models)
        .loaded(&[loaded])
        .tokens(400)
        .gpu(gpu)
        .start()
        .await
}

/// The instance busy with a long request of MODEL; then a request of OTHER queues, and one
/// of MODEL behind it. Returns the model loads the instance made.
async fn loads_when_a_cold_request_heads_the_queue(window: u32) -> u64 {
    let fake = one_model_gpu().await;
    let gw = GatewayProcess::builder()
        .instances(&[fake.url()])
        .pool(&format!(
            "max_inflight_per_instance = 1\naffinity_queue_window = {window}"
        ))
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let fakes = [fake];
    let body = |model: &str, content: &str, tokens: u64| {
        json!({"model": model, "stream": false, "options": {"num_predict": tokens},
            "messages": [{"role": "user", "content": content}]})
    };
    let (_, long) = occupy(&gw, &fakes, body(MODEL, "long", 60), None).await;
    let mut queued_tasks = Vec::new();
    for (n, model) in [OTHER, MODEL].into_iter().enumerate() {
        queued_tasks.push(tokio::spawn(post_chat(gw.url(), body(model, "short", 5))));
        corral_tests::support::eventually(Duration::from_secs(5), "the request queued", || {
            let gw = &gw;
            async move { queued(gw).await == (n + 1) as f64 }
        })
        .await;
    }
    long.await.expect("long request");
    for t in queued_tasks {
        t.await.expect("queued request");
    }
    let loads = fakes[0].gpu_stats().map_or(0, |s| s.loads);
    gw.stop().await;
    loads
}

#[tokio::test]
async fn a_queued_request_whose_model_is_loaded_goes_before_one_that_would_load_its_own() {
    // The freed slot goes to the request of the loaded model; the other model loads once.
    assert_eq!(loads_when_a_cold_request_heads_the_queue(8).await, 1);
    // Strictly first come, first served: OTHER loads, then MODEL loads back.
    assert_eq!(loads_when_a_cold_request_heads_the_queue(0).await, 2);
}

/// A third model, loaded only where a test puts it.
const THIRD: &str = "phi3:mini";

/// Two one-slot instances that hold one model at a time: the first busy with a long MODEL
/// request, the second with a long request of `second`; then a request of OTHER queues, and
/// three of MODEL behind it (`affinity_queue_window = 1`). Returns the MODEL requests'
/// `load_duration` (ns), in the order sent.
async fn model_loads_behind_a_cold_head(second: &str) -> Vec<u64> {
    let mut fakes = Vec::new();
    for loaded in [MODEL, second] {
        fakes.push(one_model_gpu_with(&[MODEL, OTHER, THIRD], loaded).await);
    }
    let urls: Vec<String> = fakes.iter().map(FakeOllama::url).collect();
    let gw = GatewayProcess::builder()
        .instances(&urls)
        .pool("max_inflight_per_instance = 1\naffinity_queue_window = 1")
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    let body = |model: &str, content: &str, tokens: u64| {
        json!({"model": model, "stream": false, "options": {"num_predict": tokens},
            "messages": [{"role": "user", "content": content}]})
    };
    let (first, a) = occupy(&gw, &fakes, body(MODEL, "long", 60), None).await;
    let (_, b) = occupy(&gw, &fakes, body(second, "longer", 150), Some(first)).await;
    let mut tasks = Vec::new();
    for (n, model) in [OTHER, MODEL, MODEL, MODEL].into_iter().enumerate() {
        let content = format!("short {n}");
        tasks.push(tokio::spawn(post_chat(gw.url(), body(model, &content, 5))));
        corral_tests::support::eventually(Duration::from_secs(5), "the request queued", || {
            let gw = &gw;
            async move { queued(gw).await == (n + 1) as f64 }
        })
        .await;
    }
    let mut loads = Vec::new();
    for (n, t) in tasks.into_iter().enumerate() {
        let v = t.await.expect("queued request");
        if n > 0 {
            loads.push(v["load_duration"].as_u64().expect("load_duration"));
        }
    }
    for t in [a, b] {
        t.await.expect("long request");
    }
    gw.stop().await;
    loads
}

#[tokio::test]
async fn a_queued_request_warm_elsewhere_lets_the_loaded_models_requests_go_first() {
    // OTHER is loaded on the second instance: the first serves every MODEL request before it
    // would load OTHER, however often OTHER's request is passed over.
    let loads = model_loads_behind_a_cold_head(OTHER).await;
    assert!(
        loads.iter().all(|ns| *ns < 100_000_000),
        "no MODEL request waited for a load: {loads:?}"
    );
    // Loaded nowhere else, it is passed over at most `window` times, then loads OTHER on the
    // first instance, and a MODEL request behind it pays a load of its own.
    let loads = model_loads_behind_a_cold_head(THIRD).await;
    assert!(
        loads.iter().any(|ns| *ns >= 200_000_000),
        "a MODEL request paid a load: {loads:?}"
    );
}
