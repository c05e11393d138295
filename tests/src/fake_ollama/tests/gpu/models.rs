//! Loading models, evicting the least recently used one, waiting for busy ones, and
//! unloading after keep-alive: what `load_duration` and `/api/ps` report.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::super::super::{FakeOllama, GpuModel};
use super::{chat, client, conversation, gpu, long_system, post, ps_names, stats, until};

#[tokio::test]
async fn a_load_shows_in_load_duration_and_api_ps() {
    // 3 s of load and 5 min of keep-alive at a tenth: 300 ms and 30 s.
    let fake = FakeOllama::builder().gpu(gpu(0.1)).tokens(2).start().await;
    assert!(ps_names(&fake).await.is_empty(), "nothing loaded at start");
    let body = conversation("llama3:8b", "be brief", &["hi"]);

    let first = chat(&fake, body.clone()).await;
    let load = first.nanos("load_duration");
    assert!(load >= Duration::from_millis(300), "{load:?}");
    assert!(load < Duration::from_millis(600), "{load:?}");
    assert!(first.first >= load + first.nanos("prompt_eval_duration"));
    let total = first.nanos("total_duration");
    assert!(total >= load + first.nanos("prompt_eval_duration") + first.nanos("eval_duration"));

    let ps: Value = client()
        .get(format!("{}/api/ps", fake.url()))
        .send()
        .await
        .expect("ps")
        .json()
        .await
        .expect("json");
    let entry = &ps["models"][0];
    assert_eq!(ps["models"].as_array().expect("list").len(), 1);
    assert_eq!(
        (&entry["name"], &entry["model"]),
        (&json!("llama3:8b"), &json!("llama3:8b"))
    );
    assert_eq!(entry["size_vram"], entry["size"]);
    let expires = chrono::DateTime::parse_from_rfc3339(entry["expires_at"].as_str().expect("date"))
        .expect("RFC 3339");
    let in_secs = (expires.timestamp_millis() - chrono::Utc::now().timestamp_millis()) / 1_000;
    assert!(
        (25..=30).contains(&in_secs),
        "expires in {in_secs} s, keep-alive 30 s"
    );

    let second = chat(&fake, body).await;
    assert_eq!(second.count("load_duration"), 0, "already loaded");
    assert_eq!(stats(&fake).loads, 1);
}

fn two_models(model: GpuModel) -> crate::fake_ollama::FakeOllamaBuilder {
    FakeOllama::builder()
        .gpu(model)
        .models(&["a:1b", "b:1b", "c:1b"])
        .tokens(2)
}

#[tokio::test]
async fn a_second_model_evicts_the_first_and_its_caches() {
    let fake = two_models(gpu(0.05)).start().await;
    let a = conversation("a:1b", &long_system("A", 200), &["hi"]);
    let first_a = chat(&fake, a.clone()).await;
    assert_eq!(ps_names(&fake).await, ["a:1b"]);

    let b = chat(&fake, conversation("b:1b", "be brief", &["hi"])).await;
    assert!(b.nanos("load_duration") >= Duration::from_millis(150));
    assert_eq!(ps_names(&fake).await, ["b:1b"], "max_loaded_models = 1");

    let again_a = chat(&fake, a).await;
    assert!(again_a.nanos("load_duration") >= Duration::from_millis(150));
    assert_eq!(
        again_a.count("prompt_eval_count"),
        first_a.count("prompt_eval_count"),
        "a's slots went with it: nothing cached"
    );
    let gpu = stats(&fake);
    assert_eq!((gpu.loads, gpu.evictions, gpu.cache_hits), (3, 2, 0));
    let tags: Value = client()
        .get(format!("{}/api/tags", fake.url()))
        .send()
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    assert_eq!(
        tags["models"].as_array().expect("list").len(),
        3,
        "all installed"
    );
}

#[tokio::test]
async fn the_least_recently_used_model_is_evicted() {
    let model = GpuModel {
        max_loaded_models: 2,
        ..gpu(0.02)
    };
    let fake = two_models(model).start().await;
    for name in ["a:1b", "b:1b", "a:1b", "c:1b"] {
        chat(&fake, conversation(name, "be brief", &["hi"])).await;
    }
    let mut loaded = ps_names(&fake).await;
    loaded.sort();
    assert_eq!(loaded, ["a:1b", "c:1b"], "b was used longest ago");
    assert_eq!((stats(&fake).loads, stats(&fake).evictions), (3, 1));
}

#[tokio::test]
async fn a_model_switch_waits_for_the_busy_model_to_finish() {
    // 100 tokens at 2 ms, then a 200 ms load; a's release may follow the moment its
    // client read the last line by a little, hence 190 ms below.
    let model = GpuModel {
        load_ms: 1_000.0,
        ..gpu(0.2)
    };
    let fake = two_models(model)
        .loaded(&["a:1b"])
        .tokens(100)
        .start()
        .await;
    let busy = tokio::spawn({
        let fake = fake.clone();
        async move { chat(&fake, conversation("a:1b", "long answer", &["go"])).await }
    });
    until(&fake, "a generates", |s| s.busy_slots == 1).await;
    let sent = Instant::now();
    let switched = chat(&fake, conversation("b:1b", "be brief", &["hi"])).await;
    let busy = busy.await.expect("a's reply");

    assert_eq!(busy.count("eval_count"), 100, "a was not cut short");
    let a_done = busy.ended - sent;
    assert!(
        switched.first >= a_done + Duration::from_millis(190),
        "b started {:?} after it was sent; a ended after {a_done:?}",
        switched.first
    );
    // Ollama's load_duration covers the whole wait for the model, not the load alone:
    // all of b's wait but its short prompt and the trips to and from the client.
    let load = switched.nanos("load_duration");
    assert!(load >= Duration::from_millis(200), "{load:?}");
    assert!(
        switched.first - load < Duration::from_millis(150),
        "{load:?}"
    );
    assert_eq!(ps_names(&fake).await, ["b:1b"]);
}

#[tokio::test]
async fn idle_models_unload_after_keep_alive() {
    // 10 s of keep-alive at a fiftieth: 200 ms.
    let model = GpuModel {
        keep_alive: Duration::from_secs(10),
        ..gpu(0.02)
    };
    let fake = FakeOllama::builder().gpu(model).tokens(2).start().await;
    let body = conversation("llama3:8b", "be brief", &["hi"]);
    let reply = chat(&fake, body.clone()).await;
    assert_eq!(ps_names(&fake).await, ["llama3:8b"]);
    while !ps_names(&fake).await.is_empty() {
        assert!(
            reply.ended.elapsed() < Duration::from_secs(2),
            "never unloaded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(reply.ended.elapsed() >= Duration::from_millis(190));
    assert_eq!(stats(&fake).expirations, 1);
    let reloaded = chat(&fake, body.clone()).await;
    assert!(reloaded.count("load_duration") > 0);

    // A request's own keep_alive wins: 0 unloads as soon as it ends.
    let mut at_once = body;
    at_once["keep_alive"] = json!(0);
    chat(&fake, at_once).await;
    assert!(ps_names(&fake).await.is_empty());
}

#[tokio::test]
async fn an_empty_generate_loads_and_keep_alive_zero_unloads() {
    let fake = FakeOllama::builder().gpu(gpu(0.05)).start().await;
    let sent = Instant::now();
    let load: Value = post(&fake, "/api/generate", json!({"model": "llama3:8b"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(load["done_reason"], "load");
    assert!(
        sent.elapsed() >= Duration::from_millis(150),
        "waited for the load"
    );
    assert_eq!(ps_names(&fake).await, ["llama3:8b"]);
    let unload: Value = post(
        &fake,
        "/api/generate",
        json!({"model": "llama3:8b", "keep_alive": 0}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(unload["done_reason"], "unload");
    assert!(ps_names(&fake).await.is_empty());
    assert_eq!(stats(&fake).prompts, 0, "nothing was evaluated");
}
