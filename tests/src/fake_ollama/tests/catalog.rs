//! Listings, model details, embeddings and the management paths.

use serde_json::{json, Value};

use super::super::FakeOllama;
use super::{client, post};

#[tokio::test]
async fn catalog_endpoints() {
    let fake = FakeOllama::builder()
        .models(&["llama3:8b", "acme/coder:1b"])
        .loaded(&["llama3:8b"])
        .version("0.9.9")
        .start()
        .await;
    let get = |path: &str| client().get(format!("{}{path}", fake.url())).send();
    assert_eq!(
        get("/").await.expect("root").text().await.expect("text"),
        "Ollama is running"
    );
    let head = client().head(fake.url()).send().await.expect("head");
    assert_eq!(head.status(), 200);
    let version: Value = get("/api/version")
        .await
        .expect("v")
        .json()
        .await
        .expect("json");
    assert_eq!(version, json!({"version": "0.9.9"}));
    let tags: Value = get("/api/tags")
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    assert_eq!(tags["models"][0]["name"], "llama3:8b");
    assert_eq!(tags["models"][0]["details"]["family"], "llama");
    assert_eq!(tags["models"][0]["details"]["parameter_size"], "8.0B");
    assert_eq!(tags["models"][1]["model"], "acme/coder:1b");
    assert_eq!(
        tags["models"][0]["digest"].as_str().expect("digest").len(),
        64
    );
    let ps: Value = get("/api/ps")
        .await
        .expect("ps")
        .json()
        .await
        .expect("json");
    assert_eq!(ps["models"].as_array().expect("models").len(), 1);
    assert_eq!(ps["models"][0]["expires_at"], "2099-01-01T00:00:00Z");
    assert!(ps["models"][0]["size_vram"].is_u64());
    fake.set_loaded(&[]);
    let ps: Value = get("/api/ps")
        .await
        .expect("ps")
        .json()
        .await
        .expect("json");
    assert_eq!(ps["models"], json!([]));
    let models: Value = get("/v1/models")
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][1]["owned_by"], "acme");
    let one: Value = get("/v1/models/acme/coder:1b")
        .await
        .expect("model")
        .json()
        .await
        .expect("json");
    assert_eq!(one["id"], "acme/coder:1b");
    assert_eq!(get("/v1/models/other:1b").await.expect("404").status(), 404);
    let show = post(&fake, "/api/show", json!({"model": "llama3:8b"})).await;
    let show: Value = show.json().await.expect("json");
    assert_eq!(show["capabilities"], json!(["completion"]));
    assert!(show["modelfile"]
        .as_str()
        .expect("modelfile")
        .contains("FROM"));
    assert_eq!(
        post(&fake, "/api/show", json!({"model": "x"}))
            .await
            .status(),
        404
    );
    // Probes do not displace the last real request.
    assert_eq!(fake.last_request().expect("show").path, "/api/show");
    assert_eq!(fake.requests(), 0, "catalog calls are not model requests");
}

#[tokio::test]
async fn embeddings_in_both_shapes() {
    let fake = FakeOllama::builder().start().await;
    let body = json!({"model": "llama3:8b", "input": ["a b", "c"]});
    let reply: Value = post(&fake, "/api/embed", body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(reply["embeddings"].as_array().expect("list").len(), 2);
    assert_eq!(reply["embeddings"][0].as_array().expect("vector").len(), 8);
    assert_eq!(reply["prompt_eval_count"], 13);
    let body = json!({"model": "llama3:8b", "prompt": "a"});
    let reply: Value = post(&fake, "/api/embeddings", body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(reply["embedding"].as_array().expect("vector").len(), 8);
    let body = json!({"model": "llama3:8b", "input": "hello"});
    let reply: Value = post(&fake, "/v1/embeddings", body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(reply["object"], "list");
    assert_eq!(reply["data"][0]["object"], "embedding");
    assert_eq!(
        reply["usage"],
        json!({"prompt_tokens": 11, "total_tokens": 11})
    );
    assert_eq!(fake.requests(), 3);
    assert_eq!(fake.total_prompt_tokens(), 24);
}

#[tokio::test]
async fn management_paths_answer_and_are_recorded() {
    let fake = FakeOllama::builder().start().await;
    assert!(!fake.saw_path("/api/pull"));
    let reply = post(&fake, "/api/pull", json!({"model": "x"})).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.json::<Value>().await.expect("json"),
        json!({"status": "success"})
    );
    let deleted = client()
        .delete(format!("{}/api/delete", fake.url()))
        .json(&json!({"model": "x"}))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    assert!(fake.saw_path("/api/pull"));
    assert!(fake.saw_path("/api/delete"));
    assert_eq!(fake.last_request().expect("recorded").method, "DELETE");
    assert_eq!(fake.requests_log().len(), 2);
    assert_eq!(fake.requests(), 0);
}
