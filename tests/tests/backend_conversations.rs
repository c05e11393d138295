//! The conversations API straight against `backend serve`: create, read, change, delete,
//! cursor pagination newest first, who sees what inside an org, and every kind of bad input
//! getting a 400 that names the field (or 401/404).

use std::collections::HashSet;

use corral_tests::backend::{Api, BackendProcess, TestDb, SECRET};
use corral_tests::jwt;
use serde_json::{json, Value};

async fn backend(db: &TestDb) -> BackendProcess {
    BackendProcess::builder().database(&db.url()).start().await
}

#[tokio::test]
async fn create_read_update_delete() {
    let db = TestDb::create().await;
    let be = backend(&db).await;
    let alice = Api::as_user(&be.url(), "acme", "alice", None);

    let r = alice
        .post(
            "/api/conversations",
            &json!({"title": "Trip plans", "model": "llama3:8b"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let c = r.body.clone();
    let id = c["id"].as_str().expect("id").to_string();
    assert_eq!(c["title"], "Trip plans");
    assert_eq!(c["model"], "llama3:8b");
    assert_eq!(c["org_id"], "acme");
    assert_eq!(c["user_id"], "alice");
    assert_eq!(r.headers["location"], format!("/api/conversations/{id}"));

    let r = alice.get(&format!("/api/conversations/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, c);

    let r = alice
        .patch(
            &format!("/api/conversations/{id}"),
            &json!({"title": "Trip to Lisbon"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["title"], "Trip to Lisbon");
    assert_eq!(r.body["model"], "llama3:8b", "unchanged fields stay");
    assert!(r.body["updated_at"].as_str() > c["updated_at"].as_str());
    let r = alice
        .patch(
            &format!("/api/conversations/{id}"),
            &json!({"model": "qwen2.5:7b"}),
        )
        .await;
    assert_eq!(r.body["model"], "qwen2.5:7b");

    // A title is optional when creating.
    let r = alice
        .post("/api/conversations", &json!({"model": "llama3:8b"}))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["title"], "New conversation");

    let r = alice.delete(&format!("/api/conversations/{id}")).await;
    assert_eq!(r.status, 204);
    let r = alice.get(&format!("/api/conversations/{id}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "not_found");
    let r = alice.delete(&format!("/api/conversations/{id}")).await;
    assert_eq!(r.status, 404);
    be.stop().await;
}

#[tokio::test]
async fn pages_are_newest_first_with_an_opaque_cursor() {
    let db = TestDb::create().await;
    let be = backend(&db).await;
    let alice = Api::as_user(&be.url(), "acme", "alice", None);
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(
            alice
                .create_conversation(&format!("c{i}"), "llama3:8b")
                .await,
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/conversations?limit=10&cursor={c}"),
            None => "/api/conversations?limit=10".to_string(),
        };
        let r = alice.get(&path).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        pages += 1;
        let items = r.body["items"].as_array().expect("items");
        seen.extend(
            items
                .iter()
                .map(|c| c["id"].as_str().expect("id").to_string()),
        );
        match &r.body["next_cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            Value::Null => break,
            other => panic!("next_cursor {other}"),
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, expected, "newest first, each once");

    // A change moves a conversation to the top.
    let oldest = &created[0];
    alice
        .patch(
            &format!("/api/conversations/{oldest}"),
            &json!({"title": "again"}),
        )
        .await;
    let r = alice.get("/api/conversations?limit=1").await;
    assert_eq!(r.body["items"][0]["id"], oldest.as_str());
    // The default page is 20.
    let r = alice.get("/api/conversations").await;
    assert_eq!(r.body["items"].as_array().expect("items").len(), 20);
    be.stop().await;
}

#[tokio::test]
async fn a_user_sees_their_own_and_an_admin_the_orgs() {
    let db = TestDb::create().await;
    let be = backend(&db).await;
    let alice = Api::as_user(&be.url(), "acme", "alice", None);
    let bob = Api::as_user(&be.url(), "acme", "bob", Some("member"));
    let carol = Api::as_user(&be.url(), "acme", "carol", Some("admin"));
    let a = alice.create_conversation("alice's", "llama3:8b").await;
    let b = bob.create_conversation("bob's", "llama3:8b").await;

    let ids = |r: &Value| -> HashSet<String> {
        r["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(
        ids(&alice.get("/api/conversations").await.body),
        HashSet::from([a.clone()])
    );
    assert_eq!(
        ids(&bob.get("/api/conversations").await.body),
        HashSet::from([b.clone()])
    );
    assert_eq!(
        ids(&carol.get("/api/conversations").await.body),
        HashSet::from([a.clone(), b.clone()])
    );
    // Another user's conversation is as unknown as a missing one...
    assert_eq!(
        bob.get(&format!("/api/conversations/{a}")).await.status,
        404
    );
    assert_eq!(
        bob.patch(&format!("/api/conversations/{a}"), &json!({"title": "x"}))
            .await
            .status,
        404
    );
    assert_eq!(
        bob.get(&format!("/api/conversations/{a}/messages"))
            .await
            .status,
        404
    );
    // ...but the org's admin may read and manage it.
    assert_eq!(
        carol.get(&format!("/api/conversations/{a}")).await.status,
        200
    );
    assert_eq!(
        carol
            .delete(&format!("/api/conversations/{b}"))
            .await
            .status,
        204
    );
    assert_eq!(
        bob.get(&format!("/api/conversations/{b}")).await.status,
        404
    );
    be.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let db = TestDb::create().await;
    let be = backend(&db).await;
    let alice = Api::as_user(&be.url(), "acme", "alice", None);
    let id = alice.create_conversation("t", "llama3:8b").await;

    let expect_400 = |r: corral_tests::backend::Reply, field: &str| {
        assert_eq!(r.status, 400, "{field}: {:?}", r.body);
        assert_eq!(r.body["code"], "bad_request");
        let msg = r.body["error"].as_str().expect("message");
        assert!(
            msg.starts_with(&format!("{field}:")),
            "wanted {field}: in {msg:?}"
        );
    };
    let raw = |body: &'static str| {
        alice
            .request(reqwest::Method::POST, "/api/conversations")
            .header("content-type", "application/json")
            .body(body)
    };
    expect_400(alice.send(raw("{\"title\": ")).await, "body");
    expect_400(alice.send(raw("[1, 2]")).await, "body");
    expect_400(alice.send(raw("")).await, "body");
    expect_400(
        alice
            .post("/api/conversations", &json!({"title": 5, "model": "m"}))
            .await,
        "title",
    );
    expect_400(
        alice
            .post("/api/conversations", &json!({"title": "t"}))
            .await,
        "model",
    );
    expect_400(
        alice
            .post("/api/conversations", &json!({"title": "t", "model": ["m"]}))
            .await,
        "model",
    );
    expect_400(
        alice
            .post("/api/conversations", &json!({"title": "   ", "model": "m"}))
            .await,
        "title",
    );
    expect_400(
        alice
            .post(
                "/api/conversations",
                &json!({"title": "t", "model": "m", "colour": "red"}),
            )
            .await,
        "colour",
    );
    // 200 characters (multi-byte ones) is the limit; 201 is over.
    let ok = "é".repeat(200);
    let r = alice
        .post("/api/conversations", &json!({"title": ok, "model": "m"}))
        .await;
    assert_eq!(r.status, 201);
    let long = "é".repeat(201);
    expect_400(
        alice
            .post("/api/conversations", &json!({"title": long, "model": "m"}))
            .await,
        "title",
    );
    expect_400(
        alice
            .patch(&format!("/api/conversations/{id}"), &json!({"title": long}))
            .await,
        "title",
    );
    expect_400(
        alice
            .patch(&format!("/api/conversations/{id}"), &json!({}))
            .await,
        "body",
    );
    // Messages: wrong type, empty, over 100 KiB.
    let msgs = format!("/api/conversations/{id}/messages");
    expect_400(alice.post(&msgs, &json!({"content": 42})).await, "content");
    expect_400(alice.post(&msgs, &json!({"content": ""})).await, "content");
    expect_400(alice.post(&msgs, &json!({})).await, "content");
    expect_400(
        alice
            .post(&msgs, &json!({"content": "x".repeat(100 * 1024 + 1)}))
            .await,
        "content",
    );
    // A body beyond the request limit (2 x the message limit + 64 KiB): 413, still JSON.
    // (Small enough that loopback socket buffers take it whole before the early answer.)
    let r = alice
        .post(&msgs, &json!({"content": "x".repeat(400 * 1024)}))
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["code"], "payload_too_large");
    // Query parameters.
    expect_400(alice.get("/api/conversations?limit=0").await, "limit");
    expect_400(alice.get("/api/conversations?limit=abc").await, "limit");
    expect_400(
        alice.get("/api/conversations?cursor=garbage").await,
        "cursor",
    );
    expect_400(alice.get(&format!("{msgs}?cursor=bm9wZQ")).await, "cursor");

    // Unknown ids, well-formed or not: 404.
    for path in [
        "/api/conversations/00000000-0000-0000-0000-000000000000".to_string(),
        "/api/conversations/not-a-uuid".to_string(),
        "/api/conversations/123/messages".to_string(),
    ] {
        let r = alice.get(&path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.body["code"], "not_found");
    }
    let r = alice.get("/api/nothing-here").await;
    assert_eq!(r.status, 404);

    // No token, a bad token, an expired one: 401 with a challenge.
    let anon = Api::new(&be.url(), None);
    let r = anon.get("/api/conversations").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "unauthorized");
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"corral\"");
    let forged = Api::new(
        &be.url(),
        Some(jwt::hs256(
            "some-other-secret-some-other-secret",
            &jwt::claims("acme", "alice", 60),
        )),
    );
    let r = forged.get("/api/conversations").await;
    assert_eq!(r.status, 401);
    assert!(r.body["error"]
        .as_str()
        .expect("msg")
        .contains("bad signature"));
    let expired = Api::new(
        &be.url(),
        Some(jwt::hs256(SECRET, &jwt::claims("acme", "alice", -600))),
    );
    let r = expired.get("/api/conversations").await;
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .expect("ascii")
        .contains("token expired"));
    be.stop().await;
}
