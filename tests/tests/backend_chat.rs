//! A chat turn end to end through the real processes:
//! client → gateway → backend → gateway → fake Ollama, and back as a stream, with both
//! messages stored and the token counts the fake reported. Then the ways a turn can go
//! wrong: the caller leaving mid-reply, the instance failing mid-reply, the gateway refusing
//! before streaming, and the gateway being unreachable.

use std::time::Duration;

use corral_tests::backend::{token, Api, BackendProcess, TestDb, SECRET};
use corral_tests::fake_ollama::{completion_text, prompt_tokens_for, FakeOllama};
use corral_tests::gateway::{free_port, GatewayProcess};
use corral_tests::support::eventually;
use futures::StreamExt;
use serde_json::{json, Value};

/// The three processes, wired: the backend reaches the pool through the gateway, and the
/// gateway routes `/api/conversations` to the backend.
struct Stack {
    _db: TestDb,
    fake: FakeOllama,
    gateway: GatewayProcess,
    backend: BackendProcess,
}

async fn stack(fake: FakeOllama) -> Stack {
    let db = TestDb::create().await;
    let gw_port = free_port();
    let be_port = free_port();
    let backend = BackendProcess::builder()
        .database(&db.url())
        .gateway(&format!("http://127.0.0.1:{gw_port}"))
        .port(be_port)
        .start()
        .await;
    let gateway = GatewayProcess::builder()
        .instances(&[fake.url()])
        .port(gw_port)
        .env("JWT_SECRET", SECRET)
        .env("BACKEND_URL", &backend.url())
        .start()
        .await;
    gateway.wait_pool_healthy(1).await;
    Stack {
        _db: db,
        fake,
        gateway,
        backend,
    }
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

async fn messages(api: &Api, id: &str) -> Vec<Value> {
    let r = api.get(&format!("/api/conversations/{id}/messages")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn a_chat_turn_through_the_gateway_is_streamed_and_stored() {
    let s = stack(FakeOllama::builder().tokens(5).start().await).await;
    // The client talks to the gateway only.
    let alice = Api::as_user(&s.gateway.url(), "acme", "alice", None);
    let id = alice.create_conversation("greetings", "llama3:8b").await;

    let first = "hello there pool";
    let resp = alice
        .request(
            reqwest::Method::POST,
            &format!("/api/conversations/{id}/messages"),
        )
        .json(&json!({"content": first}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let message_id = resp.headers()["x-corral-message-id"]
        .to_str()
        .expect("id")
        .to_string();
    let body = resp.text().await.expect("body");
    let chunks = lines(&body);
    assert_eq!(chunks.len(), 6, "5 tokens and the final line: {body}");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["message"]["content"].as_str())
        .collect();
    assert_eq!(streamed, completion_text(5));
    let last = chunks.last().expect("final");
    assert_eq!(last["done"], true);
    let prompt = prompt_tokens_for(&[first]);
    assert_eq!(last["prompt_eval_count"], prompt);

    // The pool saw the conversation, on behalf of the caller's org (the token was forwarded).
    let seen = s.fake.last_request().expect("the fake was asked");
    assert_eq!(seen.path, "/api/chat");
    assert_eq!(seen.body["model"], "llama3:8b");
    assert_eq!(
        seen.body["messages"],
        json!([{"role": "user", "content": first}])
    );
    assert_eq!(seen.header("x-corral-org"), Some("acme"));
    assert_eq!(seen.header("x-corral-user"), Some("alice"));
    // The conversation names itself to the gateway's cache-aware routing.
    assert_eq!(seen.header("x-corral-session"), Some(id.as_str()));

    // Both messages are stored (the reply by the time the stream has ended).
    let mut stored = Vec::new();
    eventually(Duration::from_secs(5), "the reply is stored", || {
        let alice = alice.clone();
        let id = id.clone();
        async move {
            messages(&alice, &id)
                .await
                .get(1)
                .is_some_and(|m| m["complete"] == true)
        }
    })
    .await;
    stored.extend(messages(&alice, &id).await);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["role"], "user");
    assert_eq!(stored[0]["content"], first);
    assert_eq!(stored[1]["role"], "assistant");
    assert_eq!(stored[1]["id"].to_string(), message_id);
    assert_eq!(stored[1]["content"], completion_text(5));
    assert_eq!(stored[1]["prompt_tokens"], prompt);
    assert_eq!(stored[1]["completion_tokens"], 5);
    assert_eq!(s.fake.total_completion_tokens(), 5);

    // The second turn sends the whole history.
    let second = "and again";
    let r = alice
        .request(
            reqwest::Method::POST,
            &format!("/api/conversations/{id}/messages"),
        )
        .json(&json!({"content": second}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    r.text().await.expect("body");
    let seen = s.fake.last_request().expect("second request");
    let reply = completion_text(5);
    assert_eq!(
        seen.body["messages"],
        json!([
            {"role": "user", "content": first},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": second},
        ])
    );
    eventually(Duration::from_secs(5), "the second reply is stored", || {
        let alice = alice.clone();
        let id = id.clone();
        async move {
            messages(&alice, &id)
                .await
                .get(3)
                .is_some_and(|m| m["complete"] == true)
        }
    })
    .await;
    let stored = messages(&alice, &id).await;
    assert_eq!(
        stored[3]["prompt_tokens"],
        prompt_tokens_for(&[first, reply.as_str(), second])
    );
    // Messages page like conversations.
    let r = alice
        .get(&format!("/api/conversations/{id}/messages?limit=3"))
        .await;
    let cursor = r.body["next_cursor"].as_str().expect("more").to_string();
    let r = alice
        .get(&format!(
            "/api/conversations/{id}/messages?limit=3&cursor={cursor}"
        ))
        .await;
    assert_eq!(r.body["items"].as_array().expect("items").len(), 1);
    assert_eq!(r.body["next_cursor"], Value::Null);
    s.backend.stop().await;
    s.gateway.stop().await;
}

#[tokio::test]
async fn a_caller_leaving_mid_reply_leaves_the_partial_reply_stored() {
    let fake = FakeOllama::builder()
        .tokens(200)
        .token_delay(Duration::from_millis(20))
        .start()
        .await;
    let s = stack(fake).await;
    let alice = Api::as_user(&s.gateway.url(), "acme", "alice", None);
    let id = alice.create_conversation("long story", "llama3:8b").await;
    let resp = alice
        .request(
            reqwest::Method::POST,
            &format!("/api/conversations/{id}/messages"),
        )
        .json(&json!({"content": "tell me a long story"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    while got.iter().filter(|b| **b == b'\n').count() < 3 {
        let chunk = stream.next().await.expect("more").expect("chunk");
        got.extend_from_slice(&chunk);
    }
    drop(stream); // the caller goes away after three lines

    let mut reply = Value::Null;
    eventually(
        Duration::from_secs(10),
        "the partial reply is stored",
        || {
            let alice = alice.clone();
            let id = id.clone();
            async move {
                let m = messages(&alice, &id).await;
                m.get(1).is_some_and(|r| {
                    r["complete"] == false && r["content"].as_str().is_some_and(|c| !c.is_empty())
                })
            }
        },
    )
    .await;
    // Stored once, and it stays as stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored = messages(&alice, &id).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    reply.clone_from(&stored[1]);
    let content = reply["content"].as_str().expect("content");
    let full = completion_text(200);
    assert!(
        full.starts_with(content),
        "a prefix of the reply: {content:?}"
    );
    assert!(content.len() < full.len(), "cut short");
    assert!(content.starts_with("tok1 tok2 tok3 "), "{content:?}");
    assert_eq!(reply["completion_tokens"], Value::Null);
    // The generation was cancelled upstream too, not run to its end.
    eventually(
        Duration::from_secs(5),
        "the instance stops generating",
        || {
            let n = s.fake.in_flight();
            async move { n == 0 }
        },
    )
    .await;
    assert!(s.fake.total_completion_tokens() < 200);
    s.backend.stop().await;
    s.gateway.stop().await;
}

#[tokio::test]
async fn an_instance_failing_mid_reply_leaves_an_incomplete_reply() {
    let fake = FakeOllama::builder()
        .tokens(10)
        .error_after_tokens(Some(3))
        .start()
        .await;
    let s = stack(fake).await;
    let alice = Api::as_user(&s.gateway.url(), "acme", "alice", None);
    let id = alice.create_conversation("flaky", "llama3:8b").await;
    let resp = alice
        .request(
            reqwest::Method::POST,
            &format!("/api/conversations/{id}/messages"),
        )
        .json(&json!({"content": "hi"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    let chunks = lines(&body);
    assert!(chunks.last().expect("lines")["error"].is_string(), "{body}");
    eventually(Duration::from_secs(5), "the reply is stored", || {
        let alice = alice.clone();
        let id = id.clone();
        async move {
            messages(&alice, &id)
                .await
                .get(1)
                .is_some_and(|m| m["content"] != "")
        }
    })
    .await;
    let stored = messages(&alice, &id).await;
    assert_eq!(stored[1]["content"], completion_text(3));
    assert_eq!(stored[1]["complete"], false);
    s.backend.stop().await;
    s.gateway.stop().await;
}

#[tokio::test]
async fn a_refusal_before_streaming_is_passed_through_and_nothing_is_kept() {
    let s = stack(FakeOllama::builder().start().await).await;
    let alice = Api::as_user(&s.gateway.url(), "acme", "alice", None);
    // A model no instance has: the gateway answers Ollama's 404.
    let id = alice.create_conversation("typo", "no-such-model:1b").await;
    let r = alice
        .post(
            &format!("/api/conversations/{id}/messages"),
            &json!({"content": "hi"}),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .is_some_and(|m| m.contains("not found")),
        "{:?}",
        r.body
    );
    assert!(
        messages(&alice, &id).await.is_empty(),
        "the turn is taken back"
    );
    assert_eq!(s.fake.requests(), 0);
    s.backend.stop().await;
    s.gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_gateway_gives_503_and_keeps_nothing() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder()
        .database(&db.url())
        .gateway(&format!("http://127.0.0.1:{}", free_port()))
        .start()
        .await;
    // Straight to the backend (as a caller inside the network would).
    let alice = Api::new(&be.url(), Some(token("acme", "alice", None)));
    let id = alice.create_conversation("t", "llama3:8b").await;
    let r = alice
        .post(
            &format!("/api/conversations/{id}/messages"),
            &json!({"content": "hi"}),
        )
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["code"], "upstream_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert!(messages(&alice, &id).await.is_empty());
    be.stop().await;
}
