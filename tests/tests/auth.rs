//! JWT authentication through the real gateway: every key type, JWKS rotation, and each way a
//! token can be wrong, with the identity going upstream and spoofed identity stripped.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::{GatewayBuilder, GatewayProcess};
use corral_tests::jwt::{self, claims, JwksServer, TestKeys};
use corral_tests::support::chat;
use serde_json::{json, Value};

const SECRET: &str = "a-long-enough-test-secret-for-hs256-signing";

async fn send(gw: &GatewayProcess, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .json(&chat("llama3:8b", false));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    req.send().await.expect("send")
}

async fn expect_401(gw: &GatewayProcess, token: Option<&str>, reason: &str) {
    let r = send(gw, token).await;
    assert_eq!(r.status(), 401, "expected 401 for {reason}");
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "unauthorized");
    assert!(
        body["error"].as_str().is_some_and(|m| m.contains(reason)),
        "wanted {reason:?} in {body}"
    );
    if token.is_some() {
        // RFC 6750: a bad token is named in the challenge; a missing one is not an error code.
        assert!(
            challenge.contains("error=\"invalid_token\"") && challenge.contains(reason),
            "{challenge}"
        );
    }
}

fn with_pool(a: &FakeOllama) -> GatewayBuilder {
    GatewayProcess::builder().instances(&[a.url()])
}

#[tokio::test]
async fn hs256_tokens_and_every_failure() {
    let a = FakeOllama::builder().start().await;
    let gw = with_pool(&a)
        .env("JWT_SECRET", SECRET)
        .env("JWT_AUDIENCE", "corral")
        .env("JWT_ISSUER", "https://id.example.com")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let good = |mut c: Value| {
        c["aud"] = json!("corral");
        c["iss"] = json!("https://id.example.com");
        c
    };
    let token = jwt::hs256(SECRET, &good(claims("acme", "alice", 300)));
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .header("Authorization", format!("Bearer {token}"))
        .header("X-Corral-Org", "globex")
        .header("X-Corral-User", "mallory")
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let seen = a.last_request().expect("request");
    assert_eq!(
        seen.header("x-corral-org"),
        Some("acme"),
        "identity from the token, not the client"
    );
    assert_eq!(seen.header("x-corral-user"), Some("alice"));
    assert!(
        seen.header("authorization").is_none(),
        "Ollama never sees the token"
    );

    expect_401(&gw, None, "missing").await;
    let expired = jwt::hs256(SECRET, &good(claims("acme", "alice", -120)));
    expect_401(&gw, Some(&expired), "expired").await;
    let mut wrong_aud = good(claims("acme", "alice", 300));
    wrong_aud["aud"] = json!("someone-else");
    expect_401(&gw, Some(&jwt::hs256(SECRET, &wrong_aud)), "audience").await;
    let mut wrong_iss = good(claims("acme", "alice", 300));
    wrong_iss["iss"] = json!("https://evil.example.com");
    expect_401(&gw, Some(&jwt::hs256(SECRET, &wrong_iss)), "issuer").await;
    let mut no_org = good(claims("acme", "alice", 300));
    no_org.as_object_mut().expect("object").remove("org");
    expect_401(&gw, Some(&jwt::hs256(SECRET, &no_org)), "org").await;
    expect_401(
        &gw,
        Some(&jwt::hs256(
            "another-secret-another-secret-xx",
            &good(claims("acme", "a", 300)),
        )),
        "signature",
    )
    .await;

    // A tampered payload with the original signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    payload["org"] = json!("globex");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    expect_401(&gw, Some(&forged), "signature").await;

    // alg: none.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good(claims("acme", "alice", 300)).to_string())
    );
    expect_401(&gw, Some(&none), "algorithm").await;

    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    expect_401(&gw, Some("not.a.jwt"), "malformed").await;

    // A 16 KiB header is refused without being parsed as a token.
    let huge = "x".repeat(16 * 1024);
    let r = send(&gw, Some(&huge)).await;
    assert!(
        r.status() == 401 || r.status() == 431 || r.status() == 400,
        "status {}",
        r.status()
    );

    assert_eq!(a.requests(), 1, "only the good token reached the instance");
    let health = reqwest::get(format!("{}/healthz", gw.url()))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "admin endpoints need no token");
    gw.stop().await;
}

#[tokio::test]
async fn rs256_es256_and_eddsa_public_keys_and_algorithm_confusion() {
    let keys = TestKeys::generate();
    let a = FakeOllama::builder().start().await;
    for (public, token) in [
        (
            &keys.rsa_public_pem_path,
            jwt::rs256(&keys.rsa_private_pem, None, &claims("acme", "bob", 300)),
        ),
        (
            &keys.ec_public_pem_path,
            jwt::es256(&keys.ec_private_pem, None, &claims("acme", "bob", 300)),
        ),
        (
            &keys.ed_public_pem_path,
            jwt::eddsa(&keys.ed_private_pem, None, &claims("acme", "bob", 300)),
        ),
    ] {
        let gw = with_pool(&a)
            .env("JWT_PUBLIC_KEY_FILE", public.to_str().expect("path"))
            .start()
            .await;
        gw.wait_pool_healthy(1).await;
        assert_eq!(
            send(&gw, Some(&token)).await.status(),
            200,
            "{}",
            public.display()
        );
        if public == &keys.rsa_public_pem_path {
            // HS256 keyed with the RSA public key's PEM: the classic confusion attack.
            let pem = std::fs::read_to_string(public).expect("pem");
            let confused = jwt::hs256(&pem, &claims("acme", "bob", 300));
            expect_401(&gw, Some(&confused), "algorithm").await;
        }
        gw.stop().await;
    }
}

#[tokio::test]
async fn jwks_with_key_rotation() {
    let keys = TestKeys::generate();
    let second = TestKeys::generate();
    let jwks =
        JwksServer::start(json!({"keys": [jwt::rsa_jwk(&keys.rsa_public_pem_path, "k1")]})).await;
    let a = FakeOllama::builder().start().await;
    let gw = with_pool(&a)
        .env("JWKS_URL", &jwks.url())
        .toml("[auth]\njwks_min_refetch_s = 1\n")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let t1 = jwt::rs256(
        &keys.rsa_private_pem,
        Some("k1"),
        &claims("acme", "carol", 300),
    );
    assert_eq!(send(&gw, Some(&t1)).await.status(), 200);

    // The provider rotates to k2: a token signed with it works without a restart.
    jwks.set_keys(json!({"keys": [jwt::rsa_jwk(&second.rsa_public_pem_path, "k2")]}));
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the refetch rate limit
    let t2 = jwt::rs256(
        &second.rsa_private_pem,
        Some("k2"),
        &claims("acme", "carol", 300),
    );
    assert_eq!(
        send(&gw, Some(&t2)).await.status(),
        200,
        "unknown kid triggers a refetch"
    );

    // A flood of unknown kids does not hammer the provider.
    let before = jwks.fetches();
    let flood_started = std::time::Instant::now();
    for i in 0..30 {
        let bogus = jwt::rs256(
            &second.rsa_private_pem,
            Some(&format!("bogus-{i}")),
            &claims("acme", "x", 300),
        );
        assert_eq!(send(&gw, Some(&bogus)).await.status(), 401);
    }
    // At most one refetch per second (the configured minimum), however many bad kids.
    let allowed = 1 + flood_started.elapsed().as_secs() as usize;
    let fetched = jwks.fetches() - before;
    assert!(
        fetched <= allowed,
        "{fetched} fetches for 30 unknown kids in {:?}",
        flood_started.elapsed()
    );
    gw.stop().await;
}

#[tokio::test]
async fn early_answers_over_http2_end_cleanly() {
    let a = FakeOllama::builder().start().await;
    let gw = with_pool(&a).env("JWT_SECRET", SECRET).start().await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("h2 client");
    // A POST with a body answered before the body is read: 401 must arrive as a response.
    let big = serde_json::json!({"model": "llama3:8b", "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    for _ in 0..3 {
        let r = client
            .post(format!("{}/api/chat", gw.url()))
            .json(&big)
            .send()
            .await
            .expect("an answer, not a stream reset");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.expect("the JSON error body arrives whole");
        assert_eq!(body["code"], "unauthorized");
    }
    let t = jwt::hs256(SECRET, &claims("acme", "alice", 300));
    let r = client
        .post(format!("{}/api/pull", gw.url()))
        .bearer_auth(&t)
        .json(&json!({"model": "x"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    gw.stop().await;
}

#[tokio::test]
async fn public_paths_need_no_token() {
    let a = FakeOllama::builder().start().await;
    let gw = with_pool(&a)
        .env("JWT_SECRET", SECRET)
        .toml("[auth]\npublic_paths = [\"/api/version\", \"/api/tags\"]\n")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let r = reqwest::get(format!("{}/api/tags", gw.url()))
        .await
        .expect("tags");
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{}/api/ps", gw.url()))
        .await
        .expect("ps");
    assert_eq!(r.status(), 401);
    gw.stop().await;
}
