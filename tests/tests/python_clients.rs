//! The official `openai` and `ollama` Python clients, as users run them, through the gateway
//! with an API key (issue 11). `scripts/test` installs them from PyPI when missing.

use corral_tests::backend::{Api, BackendProcess, TestDb, PEPPER};
use corral_tests::fake_ollama::{completion_text, FakeOllama};
use corral_tests::gateway::GatewayProcess;
use serde_json::{json, Value};

#[tokio::test]
async fn openai_and_ollama_python_clients_work_with_a_key() {
    let db = TestDb::create().await;
    let backend = BackendProcess::keyed(&db).start().await;
    let fake = FakeOllama::builder().tokens(4).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[fake.url()])
        .env("API_KEY_PEPPER", PEPPER)
        .env("DATABASE_URL", &db.url())
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let admin = Api::as_user(&backend.url(), "acme", "alice", Some("admin"));
    let r = admin
        .post("/api/orgs/acme/keys", &json!({"name": "sdk"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = r.body["key"].as_str().expect("key").to_string();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/clients_with_key.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &gw.url(), &key, "llama3:8b"])
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "the Python clients failed (scripts/test installs them: pip install openai ollama):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let text = completion_text(4);
    assert_eq!(got["openai_text"], text.as_str(), "{got}");
    assert_eq!(got["openai_usage"], 4);
    assert_eq!(got["openai_stream"], text.as_str());
    assert_eq!(got["openai_bad_key"], 401);
    assert_eq!(got["ollama_text"], text.as_str());
    assert_eq!(got["ollama_eval_count"], 4);
    assert_eq!(got["ollama_stream"], text.as_str());
    assert!(got["ollama_models"]
        .as_array()
        .is_some_and(|m| m.iter().any(|n| n == "llama3:8b")));
    gw.stop().await;
    backend.stop().await;
}
