//! Policy files through the real gateway: limits per org and user, burst, headers, model
//! access, token rates (per org and per user), admin-only model management, concurrent streams,
//! and hot reload (good edits live, bad ones refused).

use std::time::{Duration, Instant};

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::jwt::{self, claims};
use corral_tests::support::{chat, chat_as, eventually, metric_sum, metrics, metrics_when};
use serde_json::Value;

const SECRET: &str = "policy-test-secret-policy-test-secret";

fn token(org: &str, user: &str) -> String {
    jwt::hs256(SECRET, &claims(org, user, 600))
}

const LIMITS: &str = r#"
[defaults]
requests_per_minute = 600
burst = 4
user_requests_per_minute = 0

[orgs.acme]
requests_per_minute = 60
burst = 2
user_requests_per_minute = 0

[orgs.acme.users.alice]
user_requests_per_minute = 6
"#;

#[tokio::test]
async fn org_and_user_limits_with_burst_and_headers() {
    let a = FakeOllama::builder().tokens(1).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .policy("limits.toml", LIMITS)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;

    // acme: 60/min with a burst of 2: three at once, then refused.
    let bob = token("acme", "bob");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(chat_as(&gw.url(), &bob, "llama3:8b").await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        codes,
        vec![200, 200, 200, 429],
        "burst of two above the rate"
    );
    let ok = &statuses[0];
    assert_eq!(ok.headers()["ratelimit-policy"], "\"org\";q=60;w=60");
    assert_eq!(ok.headers()["ratelimit"], "\"org\";r=2;t=1");
    let refused = statuses.pop().expect("the 429");
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["ratelimit-policy"], "\"org\";q=60;w=60");
    assert!(refused.headers()["ratelimit"]
        .to_str()
        .expect("ascii")
        .starts_with("\"org\";r=0;"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["code"], "rate_limited");

    // Another org is not affected (the defaults: burst 4).
    for _ in 0..5 {
        assert_eq!(
            chat_as(&gw.url(), &token("globex", "g"), "llama3:8b")
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        chat_as(&gw.url(), &token("globex", "g"), "llama3:8b")
            .await
            .status(),
        429
    );

    // Retry-After is honest: after it, acme is served again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(chat_as(&gw.url(), &bob, "llama3:8b").await.status(), 200);
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(&m, "corral_rate_limited_total", &[("scope", "org")]),
        2.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_user_override_beats_the_org_default() {
    let a = FakeOllama::builder().tokens(1).start().await;
    let policy = "[orgs.acme]\nrequests_per_minute = 0\nuser_requests_per_minute = 600\n\n[orgs.acme.users.alice]\nuser_requests_per_minute = 6\n";
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .policy("p.toml", policy)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let alice = token("acme", "alice");
    let first = chat_as(&gw.url(), &alice, "llama3:8b").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-policy"], "\"user\";q=6;w=60");
    let second = chat_as(&gw.url(), &alice, "llama3:8b").await;
    assert_eq!(
        second.status(),
        200,
        "burst of one (ten seconds of six a minute)"
    );
    let third = chat_as(&gw.url(), &alice, "llama3:8b").await;
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "10");
    for _ in 0..10 {
        assert_eq!(
            chat_as(&gw.url(), &token("acme", "carol"), "llama3:8b")
                .await
                .status(),
            200,
            "carol has the org's 600"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn models_outside_the_policy_are_refused_and_hidden() {
    let a = FakeOllama::builder()
        .models(&["llama3.1:8b", "qwen2.5:7b", "mistral:7b"])
        .start()
        .await;
    let policy = "[orgs.acme]\nmodels = [\"llama3.*\", \"qwen2.5:*\"]\n";
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .policy("p.toml", policy)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let acme = token("acme", "bob");
    assert_eq!(chat_as(&gw.url(), &acme, "llama3.1:8b").await.status(), 200);
    let r = chat_as(&gw.url(), &acme, "mistral:7b").await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "model_not_allowed");
    let client = reqwest::Client::new();
    let tags: Value = client
        .get(format!("{}/api/tags", gw.url()))
        .bearer_auth(&acme)
        .send()
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = tags["models"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, vec!["llama3.1:8b", "qwen2.5:7b"]);
    let models: Value = client
        .get(format!("{}/v1/models", gw.url()))
        .bearer_auth(&acme)
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["data"].as_array().map(Vec::len), Some(2));
    let other: Value = client
        .get(format!("{}/api/tags", gw.url()))
        .bearer_auth(token("globex", "g"))
        .send()
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    assert_eq!(
        other["models"].as_array().map(Vec::len),
        Some(3),
        "other orgs see everything"
    );
    gw.stop().await;
}

/// A gateway in front of `a` with JWT auth and this one policy file, its pool ready.
async fn with_policy(a: &FakeOllama, policy: &str) -> GatewayProcess {
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .policy("p.toml", policy)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    gw
}

/// Under a 60-token minute, for acme replies of prompt + 40 tokens: two fit (each is charged
/// with its real counts just after its last byte), the third is refused until it drains.
async fn two_replies_then_refused(gw: &GatewayProcess, t: &str) {
    for _ in 0..2 {
        let r = chat_as(&gw.url(), t, "llama3:8b").await;
        assert_eq!(r.status(), 200, "still within the minute's worth");
        let _ = r.text().await;
    }
    metrics_when(
        &gw.url(),
        "corral_org_tokens_total",
        &[("org", "acme"), ("kind", "completion")],
        80.0,
    )
    .await;
    let third = chat_as(&gw.url(), t, "llama3:8b").await;
    assert_eq!(third.status(), 429, "over a minute's worth of tokens");
    assert!(third.headers().contains_key("retry-after"));
    let body: Value = third.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|m| m.contains("tokens per minute")),
        "{body}"
    );
}

#[tokio::test]
async fn token_rates_are_charged_with_real_counts() {
    let a = FakeOllama::builder().tokens(40).start().await;
    let policy = "[orgs.acme]\ntokens_per_minute = 60\n";
    let gw = with_policy(&a, policy).await;
    // A minute's worth (60) may be spent at once; each reply costs prompt + 40 completion.
    two_replies_then_refused(&gw, &token("acme", "bob")).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_users_token_rate_binds_that_user_only() {
    let a = FakeOllama::builder().tokens(40).start().await;
    let policy =
        "[orgs.acme]\ntokens_per_minute = 0\n\n[orgs.acme.users.alice]\ntokens_per_minute = 60\n";
    let gw = with_policy(&a, policy).await;
    two_replies_then_refused(&gw, &token("acme", "alice")).await;
    // Her org has no token rate, and another user of it has none of her own.
    let bob = token("acme", "bob");
    for _ in 0..3 {
        let r = chat_as(&gw.url(), &bob, "llama3:8b").await;
        assert_eq!(r.status(), 200, "bob is not bound by alice's rate");
        let _ = r.text().await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn admins_may_manage_models_and_members_may_not() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let pull = |t: String| {
        client
            .post(format!("{}/api/pull", gw.url()))
            .bearer_auth(t)
            .json(&serde_json::json!({"model": "qwen2.5:7b", "stream": false}))
            .send()
    };
    let member = pull(token("acme", "bob")).await.expect("answer");
    assert_eq!(member.status(), 403);
    assert!(
        !a.saw_path("/api/pull"),
        "a member's pull never reaches Ollama"
    );
    let mut admin_claims = claims("acme", "carol", 600);
    admin_claims["role"] = serde_json::json!(["admin"]);
    let admin = pull(jwt::hs256(SECRET, &admin_claims))
        .await
        .expect("answer");
    assert_eq!(admin.status(), 200);
    let body: Value = admin.json().await.expect("json");
    assert_eq!(body["status"], "success");
    assert!(
        a.saw_path("/api/pull"),
        "the admin's pull reached an instance"
    );
    gw.stop().await;
}

#[tokio::test]
async fn concurrent_streams_per_org_wait_then_429() {
    let a = FakeOllama::builder()
        .tokens(10)
        .token_delay(Duration::from_millis(100))
        .start()
        .await;
    let policy = "[orgs.acme]\nmax_concurrent_streams = 1\n";
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .pool("queue_timeout_ms = 300")
        .policy("p.toml", policy)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let acme = token("acme", "bob");
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    let send = || {
        client
            .post(&url)
            .bearer_auth(&acme)
            .json(&chat("llama3:8b", true))
            .send()
    };
    let (first, second) = tokio::join!(send(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send().await
    });
    let first = first.expect("first");
    let second = second.expect("second");
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 429, "one stream at a time for acme");
    assert!(second.headers().contains_key("retry-after"));
    let _ = first.text().await;
    assert_eq!(
        chat_as(&gw.url(), &token("globex", "g"), "llama3:8b")
            .await
            .status(),
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn policy_edits_reload_and_broken_ones_are_refused() {
    let a = FakeOllama::builder()
        .models(&["llama3:8b", "mistral:7b"])
        .tokens(1)
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .policy("acme.toml", "[orgs.acme]\nmodels = [\"llama3:*\"]\n")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let acme = token("acme", "bob");
    assert_eq!(chat_as(&gw.url(), &acme, "mistral:7b").await.status(), 403);

    // A good edit is live within 2 s.
    let file = gw.policies_dir().join("acme.toml");
    std::fs::write(
        &file,
        "[orgs.acme]\nmodels = [\"llama3:*\", \"mistral:*\"]\n",
    )
    .expect("edit");
    let start = Instant::now();
    eventually(Duration::from_secs(2), "edit live", || async {
        chat_as(&gw.url(), &acme, "mistral:7b").await.status() == 200
    })
    .await;
    let live_after = start.elapsed();

    // A broken edit is refused whole: the previous policy stays in force.
    std::fs::write(
        &file,
        "[orgs.acme]\nmodels = [\"llama3:*\"]\nrequests_per_minute = -1\n",
    )
    .expect("edit");
    let readyz = format!("{}/readyz", gw.url());
    eventually(Duration::from_secs(3), "reload error reported", || async {
        let v: Value = reqwest::get(&readyz)
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        v["checks"]["policy"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("acme.toml:3: orgs.acme.requests_per_minute"))
    })
    .await;
    assert_eq!(
        chat_as(&gw.url(), &acme, "mistral:7b").await.status(),
        200,
        "old policy still serves"
    );
    let m = metrics(&gw.url()).await;
    assert!(metric_sum(&m, "corral_policy_reloads_total", &[("result", "error")]) >= 1.0);
    assert!(metric_sum(&m, "corral_policy_reloads_total", &[("result", "ok")]) >= 1.0);

    // A duplicate org in a second file is refused too, naming both files.
    std::fs::write(&file, "[orgs.acme]\nmodels = [\"llama3:*\"]\n").expect("fix");
    std::fs::write(
        gw.policies_dir().join("zz.toml"),
        "[orgs.acme]\nburst = 1\n",
    )
    .expect("dup");
    eventually(Duration::from_secs(3), "duplicate reported", || async {
        let v: Value = reqwest::get(&readyz)
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        v["checks"]["policy"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("already defined in"))
    })
    .await;
    assert_eq!(chat_as(&gw.url(), &acme, "mistral:7b").await.status(), 200);
    println!("good edit live after {live_after:?}");
    gw.stop().await;
}

/// Kubernetes mounts a ConfigMap as `name -> ..data/name`, `..data -> ..<timestamp>/`, and
/// updates it by writing a new timestamped directory and renaming a new `..data` link over
/// the old one (atomic), then deleting the old directory: no file is ever written in place.
struct ConfigMapDir {
    dir: std::path::PathBuf,
    version: usize,
}

impl ConfigMapDir {
    fn publish(&mut self, name: &str, text: &str, modified: std::time::SystemTime) {
        self.version += 1;
        let stamp = format!("..2026_12_06_00_00_0{}.000{}", self.version, self.version);
        let data = self.dir.join(&stamp);
        std::fs::create_dir(&data).expect("timestamped dir");
        let file = data.join(name);
        std::fs::write(&file, text).expect("write");
        let f = std::fs::File::options()
            .write(true)
            .open(&file)
            .expect("open");
        f.set_modified(modified).expect("set mtime");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&stamp, &tmp).expect("..data_tmp link");
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        let link = self.dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("file link");
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove old version");
        }
    }
}

#[tokio::test]
async fn a_kubernetes_configmap_update_reloads_within_2_s() {
    let a = FakeOllama::builder()
        .models(&["llama3:8b", "mistral:7b"])
        .tokens(1)
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let acme = token("acme", "bob");
    for entry in std::fs::read_dir(gw.policies_dir()).expect("dir") {
        std::fs::remove_file(entry.expect("entry").path()).expect("clear");
    }
    let mut cm = ConfigMapDir {
        dir: gw.policies_dir(),
        version: 0,
    };
    // Both versions have the same size and modification time: only the swap tells them apart.
    let stamp = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    cm.publish("acme.toml", "[orgs.acme]\nmodels = [\"llama3:*\"]\n", stamp);
    eventually(Duration::from_secs(3), "first version live", || async {
        chat_as(&gw.url(), &acme, "mistral:7b").await.status() == 403
    })
    .await;
    assert_eq!(chat_as(&gw.url(), &acme, "llama3:8b").await.status(), 200);

    cm.publish("acme.toml", "[orgs.acme]\nmodels = [\"mistral*\"]\n", stamp);
    let swapped = Instant::now();
    eventually(Duration::from_secs(2), "swapped version live", || async {
        chat_as(&gw.url(), &acme, "mistral:7b").await.status() == 200
    })
    .await;
    assert!(swapped.elapsed() < Duration::from_secs(2));
    assert_eq!(chat_as(&gw.url(), &acme, "llama3:8b").await.status(), 403);
    let v: Value = reqwest::get(format!("{}/readyz", gw.url()))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(v["checks"]["policy"]["status"], "ok", "{v}");
    assert_eq!(v["checks"]["policy"]["files"], 1, "{v}");
}
