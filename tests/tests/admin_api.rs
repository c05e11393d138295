//! The admin JSON API (`/admin/api/...`) and the console's files, through the real gateway:
//! who may see what (401, 403, 404 isolation), the pool as the health checker sees it, org
//! usage against quotas, the policy in force and its last refused edit.

use std::time::Duration;

use corral_tests::backend::{token, SECRET};
use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::{GatewayBuilder, GatewayProcess};
use corral_tests::redis_server::{unique_prefix, RedisServer};
use corral_tests::support::chat;
use serde_json::{json, Value};

const POLICY: &str = r#"
[defaults]
requests_per_minute = 0
user_requests_per_minute = 0

[orgs.acme]
models = ["llama3*"]
quota = { soft_tokens = 20, hard_tokens = 100000 }

[orgs.globex]
quota = { period = "day", hard_tokens = 10 }
"#;

/// The orgs an `/admin/api/orgs` answer lists, in order.
fn org_names(orgs: &Value) -> Vec<&str> {
    orgs["orgs"]
        .as_array()
        .expect("orgs")
        .iter()
        .map(|o| o["org"].as_str().expect("org"))
        .collect()
}

fn gateway(fake: &FakeOllama) -> GatewayBuilder {
    GatewayProcess::builder()
        .instances(&[fake.url()])
        .env("JWT_SECRET", SECRET)
        .policy("orgs.toml", POLICY)
}

async fn get(gw: &GatewayProcess, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", gw.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("send");
    let status = r.status().as_u16();
    assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
    (status, r.json().await.expect("json"))
}

async fn chat_as(gw: &GatewayProcess, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .bearer_auth(token)
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("chat")
}

#[tokio::test]
async fn each_audience_sees_what_it_may() {
    let fake = FakeOllama::builder()
        .models(&["llama3:8b", "qwen2.5:7b"])
        .loaded(&["llama3:8b"])
        .start()
        .await;
    let gw = gateway(&fake).start().await;
    gw.wait_pool_healthy(1).await;
    let operator = token("ops", "olga", Some("operator"));
    let acme_admin = token("acme", "ann", Some("admin"));
    let member = token("acme", "bob", None);

    // No credential, a bad one, a member: refused with the reason.
    let (s, body) = get(&gw, "/admin/api/me", None).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (s, _) = get(&gw, "/admin/api/pool", Some("not-a-token")).await;
    assert_eq!(s, 401);
    let (s, body) = get(&gw, "/admin/api/me", Some(&member)).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("member of org \"acme\""),
        "{body}"
    );
    let (s, _) = get(&gw, "/admin/api/orgs/acme", Some(&member)).await;
    assert_eq!(s, 403);

    // An org admin: their org only; another org is a 404 like an unknown one.
    let (s, me) = get(&gw, "/admin/api/me", Some(&acme_admin)).await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            me["org"].as_str(),
            me["org_admin"].as_bool(),
            me["operator"].as_bool()
        ),
        (Some("acme"), Some(true), Some(false))
    );
    let (s, orgs) = get(&gw, "/admin/api/orgs", Some(&acme_admin)).await;
    assert_eq!(s, 200);
    let names = org_names(&orgs);
    assert_eq!(names, ["acme"]);
    for path in ["/admin/api/orgs/globex", "/admin/api/orgs/nobody"] {
        let (s, body) = get(&gw, path, Some(&acme_admin)).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {body}"
        );
    }
    for path in ["/admin/api/pool", "/admin/api/policy"] {
        let (s, _) = get(&gw, path, Some(&acme_admin)).await;
        assert_eq!(s, 403, "{path}");
    }

    // The operator: the pool as the health checker found it.
    let (s, pool) = get(&gw, "/admin/api/pool", Some(&operator)).await;
    assert_eq!(s, 200, "{pool}");
    let inst = &pool["instances"][0];
    assert_eq!(inst["url"], fake.url());
    assert_eq!(
        (
            inst["healthy"].as_bool(),
            inst["cap"].as_u64(),
            inst["in_flight"].as_u64()
        ),
        (Some(true), Some(4), Some(0))
    );
    assert_eq!(inst["loaded"][0]["name"], "llama3:8b", "{inst}");
    assert!(inst["loaded"][0]["size_vram"].as_u64().is_some(), "{inst}");
    assert_eq!(inst["available"], json!(["llama3:8b", "qwen2.5:7b"]));
    assert!(
        inst["last_check_ms_ago"]
            .as_u64()
            .is_some_and(|ms| ms < 5000),
        "{inst}"
    );
    assert_eq!(inst["events"][0]["kind"], "admitted", "{inst}");
    assert_eq!(pool["queue"]["capacity"], 256);
    assert_eq!(pool["series"]["step_s"], 10);
    assert_eq!(pool["series"]["points"].as_array().unwrap().len(), 90);
    let (s, orgs) = get(&gw, "/admin/api/orgs", Some(&operator)).await;
    assert_eq!(s, 200);
    let names = org_names(&orgs);
    assert_eq!(
        names,
        ["acme", "globex", "ops"],
        "the policy's orgs and the operator's own"
    );
    let (s, _) = get(&gw, "/admin/api/orgs/globex", Some(&operator)).await;
    assert_eq!(s, 200);
    // Path segments are percent-decoded, as the page encodes them.
    let (s, org) = get(&gw, "/admin/api/orgs/glob%65x", Some(&operator)).await;
    assert_eq!((s, org["org"].as_str()), (200, Some("globex")));

    // Only GET; unknown paths are named.
    let r = reqwest::Client::new()
        .post(format!("{}/admin/api/pool", gw.url()))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let (s, body) = get(&gw, "/admin/api/nothing", Some(&operator)).await;
    assert_eq!(s, 404, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn org_usage_follows_requests_and_refusals() {
    let fake = FakeOllama::builder().models(&["llama3:8b"]).start().await;
    let gw = gateway(&fake).start().await;
    gw.wait_pool_healthy(1).await;
    let acme_user = token("acme", "bob", None);
    for _ in 0..2 {
        assert_eq!(chat_as(&gw, &acme_user).await.status(), 200);
    }
    // globex's hard limit (10 tokens a day) is below any request's reservation.
    let r = chat_as(&gw, &token("globex", "gus", None)).await;
    assert_eq!(r.status(), 429);
    let spent = fake.total_prompt_tokens() + fake.total_completion_tokens();

    let operator = token("ops", "olga", Some("operator"));
    let (s, acme) = get(&gw, "/admin/api/orgs/acme", Some(&operator)).await;
    assert_eq!(s, 200, "{acme}");
    assert_eq!(acme["used"].as_u64(), Some(spent), "{acme}");
    assert_eq!(
        (acme["soft_tokens"].as_u64(), acme["hard_tokens"].as_u64()),
        (Some(20), Some(100000))
    );
    assert_eq!(
        (acme["period"].as_str(), acme["requests"].as_u64()),
        (Some("month"), Some(2))
    );
    assert_eq!(acme["by_model"][0]["model"], "llama3:8b");
    assert_eq!(acme["by_model"][0]["requests"], 2);
    let by_model_tokens = acme["by_model"][0]["prompt_tokens"].as_u64().unwrap()
        + acme["by_model"][0]["completion_tokens"].as_u64().unwrap();
    assert_eq!(by_model_tokens, spent);
    assert!(
        acme["resets_at"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z"),
        "{acme}"
    );
    let (_, globex) = get(&gw, "/admin/api/orgs/globex", Some(&operator)).await;
    assert_eq!(
        (
            globex["quota_refused"].as_u64(),
            globex["used"].as_u64(),
            globex["period"].as_str()
        ),
        (Some(1), Some(0), Some("day")),
        "{globex}"
    );

    // The last steps of the series hold the three requests and no 5xx.
    let (_, pool) = get(&gw, "/admin/api/pool", Some(&operator)).await;
    let points = pool["series"]["points"].as_array().unwrap();
    let requests: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    let errors: u64 = points.iter().map(|p| p["errors"].as_u64().unwrap()).sum();
    assert_eq!((requests, errors), (3, 0), "{points:?}");
    gw.stop().await;
}

/// With Redis, `used` is the quota's shared counter: a replica that served nothing shows what
/// another spent, while its own request counts (per replica) stay at zero.
#[tokio::test]
async fn usage_is_shared_through_redis_across_replicas() {
    let fake = FakeOllama::builder().models(&["llama3:8b"]).start().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let gw = gateway(&fake)
            .env("REDIS_URL", &redis.url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .start()
            .await;
        gw.wait_pool_healthy(1).await;
        replicas.push(gw);
    }
    let acme_user = token("acme", "bob", None);
    for _ in 0..3 {
        assert_eq!(chat_as(&replicas[0], &acme_user).await.status(), 200);
    }
    let spent = fake.total_prompt_tokens() + fake.total_completion_tokens();
    assert!(spent > 0);
    let operator = token("ops", "olga", Some("operator"));
    // Settlement is written just after each answer: give the last one a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let other = loop {
        let (s, other) = get(&replicas[1], "/admin/api/orgs/acme", Some(&operator)).await;
        assert_eq!(s, 200, "{other}");
        if other["used"].as_u64() == Some(spent) || std::time::Instant::now() > deadline {
            break other;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (other["used"].as_u64(), other["requests"].as_u64()),
        (Some(spent), Some(0)),
        "{other}"
    );
    let (_, own) = get(&replicas[0], "/admin/api/orgs/acme", Some(&operator)).await;
    assert_eq!(
        (own["used"].as_u64(), own["requests"].as_u64()),
        (Some(spent), Some(3)),
        "{own}"
    );
    for gw in replicas {
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_dead_instance_and_a_refused_policy_edit_show() {
    let fake = FakeOllama::builder().models(&["llama3:8b"]).start().await;
    let gw = gateway(&fake).start().await;
    gw.wait_pool_healthy(1).await;
    let operator = token("ops", "olga", Some("operator"));
    let (_, policy) = get(&gw, "/admin/api/policy", Some(&operator)).await;
    assert_eq!(policy["last_error"], Value::Null, "{policy}");
    assert_eq!(policy["orgs"]["acme"]["models"], json!(["llama3*"]));
    assert_eq!(policy["orgs"]["globex"]["quota"]["period"], "day");
    assert_eq!(policy["defaults"]["requests_per_minute"], 0);
    assert!(policy["loaded_at"].as_str().unwrap().ends_with('Z'));

    std::fs::write(
        gw.policies_dir().join("broken.toml"),
        "[orgs.initech]\nrequests_per_minute = \"lots\"\n",
    )
    .unwrap();
    fake.stop().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, policy) = get(&gw, "/admin/api/policy", Some(&operator)).await;
        let (_, pool) = get(&gw, "/admin/api/pool", Some(&operator)).await;
        let inst = &pool["instances"][0];
        let refused = policy["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("broken.toml:2"));
        if refused && inst["healthy"] == false {
            assert_eq!(inst["events"][0]["kind"], "ejected", "{inst}");
            assert!(policy["last_error"]["at"].as_str().is_some(), "{policy}");
            // The previous policy still serves.
            assert_eq!(policy["orgs"]["acme"]["models"], json!(["llama3*"]));
            assert!(policy["orgs"].get("initech").is_none());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{policy}\n{pool}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn without_authentication_the_admin_api_is_closed() {
    let fake = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[fake.url()])
        .start()
        .await;
    let (s, body) = get(&gw, "/admin/api/pool", None).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("needs authentication"));
    gw.stop().await;
}

#[tokio::test]
async fn the_console_is_served_with_strict_headers() {
    let fake = FakeOllama::builder().start().await;
    let gw = gateway(&fake).start().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/console", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/console/");
    let r = client
        .get(format!("{}/console/", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<script") && !html.contains("<script>"),
        "scripts are files, never inline"
    );
    let r = client
        .get(format!("{}/console/missing.js", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.headers()["x-frame-options"],
        "DENY",
        "errors carry the page's headers"
    );
    gw.stop().await;

    // Moved, or off.
    let gw = gateway(&fake)
        .toml("[console]\npath = \"/ops\"")
        .start()
        .await;
    let r = client
        .get(format!("{}/ops/", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{}/console/", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    gw.stop().await;
    let gw = gateway(&fake).env("CONSOLE_ENABLED", "false").start().await;
    let r = client
        .get(format!("{}/console/", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The admin API stays, for scripts.
    let (s, _) = get(
        &gw,
        "/admin/api/me",
        Some(&token("ops", "olga", Some("operator"))),
    )
    .await;
    assert_eq!(s, 200);
    gw.stop().await;

    // Operators are whoever `console.operator_roles` names.
    let gw = gateway(&fake)
        .toml("[console]\noperator_roles = [\"sre\"]")
        .start()
        .await;
    let (s, me) = get(
        &gw,
        "/admin/api/pool",
        Some(&token("ops", "sam", Some("sre"))),
    )
    .await;
    assert_eq!(s, 200, "{me}");
    let (s, _) = get(
        &gw,
        "/admin/api/pool",
        Some(&token("ops", "olga", Some("operator"))),
    )
    .await;
    assert_eq!(s, 403, "operator is no longer an operator role");
    gw.stop().await;
}
