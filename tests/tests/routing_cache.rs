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
