//! The usage report against rows written straight into the `usage_events` ledger (as the
//! gateway writes them): totals, per model and per user, for a month or a day, with the
//! configured limits.

use corral_tests::backend::{Api, BackendProcess, TestDb};
use serde_json::{json, Value};

/// (request_id, org, user, model, prompt, completion, at)
const LEDGER: &[(&str, &str, &str, &str, i64, i64, &str)] = &[
    (
        "r1",
        "acme",
        "alice",
        "llama3:8b",
        100,
        50,
        "2025-03-01T00:00:00Z",
    ),
    (
        "r2",
        "acme",
        "alice",
        "llama3:8b",
        10,
        5,
        "2025-03-07T12:00:00Z",
    ),
    (
        "r3",
        "acme",
        "bob",
        "qwen2.5:7b",
        1000,
        200,
        "2025-03-07T23:59:59Z",
    ),
    (
        "r4",
        "acme",
        "bob",
        "llama3:8b",
        1,
        2,
        "2025-03-31T23:59:59.999Z",
    ),
    // Outside March, or another org's: never counted.
    (
        "r5",
        "acme",
        "alice",
        "llama3:8b",
        7777,
        7777,
        "2025-04-01T00:00:00Z",
    ),
    (
        "r6",
        "acme",
        "alice",
        "llama3:8b",
        8888,
        8888,
        "2025-02-28T23:59:59Z",
    ),
    (
        "r7",
        "globex",
        "gina",
        "llama3:8b",
        9999,
        9999,
        "2025-03-10T00:00:00Z",
    ),
];

async fn fill(db: &TestDb) {
    let client = db.client().await;
    for (id, org, user, model, p, c, at) in LEDGER {
        client
            .execute(
                "INSERT INTO usage_events \
                 (request_id, org_id, user_id, model, instance, prompt_tokens, completion_tokens, at) \
                 VALUES ($1, $2, $3, $4, 'http://gpu-1:11434', $5, $6, $7::text::timestamptz)",
                &[id, org, user, model, p, c, at],
            )
            .await
            .expect("insert usage");
    }
}

fn entry(list: &Value, key: &str, name: &str) -> Value {
    list.as_array()
        .expect("list")
        .iter()
        .find(|e| e[key] == name)
        .unwrap_or_else(|| panic!("{name} missing from {list}"))
        .clone()
}

#[tokio::test]
async fn report_totals_match_the_ledger() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder()
        .database(&db.url())
        .env("ORG_SOFT_TOKEN_LIMIT", "1000")
        .env("ORG_HARD_TOKEN_LIMIT", "5000")
        .start()
        .await;
    fill(&db).await;
    let admin = Api::as_user(&be.url(), "acme", "carol", Some("admin"));

    let r = admin.get("/api/orgs/acme/usage?period=2025-03").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let b = &r.body;
    assert_eq!(b["org"], "acme");
    assert_eq!(b["period"]["kind"], "month");
    assert_eq!(b["period"]["label"], "2025-03");
    assert_eq!(
        b["total"],
        json!({"prompt_tokens": 1111, "completion_tokens": 257, "total_tokens": 1368, "requests": 4})
    );
    let llama = entry(&b["by_model"], "model", "llama3:8b");
    assert_eq!(
        (
            llama["prompt_tokens"].as_i64(),
            llama["completion_tokens"].as_i64()
        ),
        (Some(111), Some(57))
    );
    assert_eq!(llama["requests"], 3);
    let qwen = entry(&b["by_model"], "model", "qwen2.5:7b");
    assert_eq!(qwen["total_tokens"], 1200);
    assert_eq!(b["by_model"][0]["model"], "qwen2.5:7b", "largest first");
    let alice = entry(&b["by_user"], "user_id", "alice");
    assert_eq!(alice["total_tokens"], 165);
    let bob = entry(&b["by_user"], "user_id", "bob");
    assert_eq!(bob["total_tokens"], 1203);
    assert_eq!(bob["requests"], 2);
    assert_eq!(
        b["limits"],
        json!({"soft_tokens": 1000, "hard_tokens": 5000, "soft_exceeded": true, "hard_exceeded": false})
    );

    // One day.
    let r = admin
        .get("/api/orgs/acme/usage?period=day:2025-03-07")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["period"]["kind"], "day");
    assert_eq!(r.body["total"]["total_tokens"], 1215);
    assert_eq!(r.body["total"]["requests"], 2);

    // A month with nothing: zeros, empty lists.
    let r = admin.get("/api/orgs/acme/usage?period=2024-01").await;
    assert_eq!(r.body["total"]["total_tokens"], 0);
    assert_eq!(r.body["by_model"], json!([]));

    // Bad periods name the parameter.
    for bad in ["2025-13", "march", "day:2025-02-30"] {
        let r = admin
            .get(&format!("/api/orgs/acme/usage?period={bad}"))
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.body["error"]
            .as_str()
            .expect("msg")
            .starts_with("period:"));
    }
    be.stop().await;
}

#[tokio::test]
async fn limits_are_null_when_unset() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder().database(&db.url()).start().await;
    let admin = Api::as_user(&be.url(), "acme", "carol", Some("admin"));
    let r = admin.get("/api/orgs/acme/usage").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["limits"]["soft_tokens"], Value::Null);
    assert_eq!(r.body["limits"]["hard_tokens"], Value::Null);
    assert_eq!(
        r.body["period"]["kind"], "month",
        "the current month by default"
    );
    be.stop().await;
}
