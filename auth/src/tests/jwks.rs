//! JWKS: lazy first fetch, rotation, the refetch rate limit and single-flight, timer refresh,
//! failures keeping the old keys.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use jsonwebtoken::Algorithm;

use super::support::{claims, jwk, keys, sign, JwksServer};
use super::{check, error, refused, AuthSettings, Verifier};

fn jwks_verifier(url: &str, min_refetch: Duration, refresh: Duration) -> Verifier {
    Verifier::new(AuthSettings {
        jwks_url: Some(url.to_owned()),
        jwks_min_refetch: min_refetch,
        jwks_refresh: refresh,
        ..AuthSettings::default()
    })
    .expect("verifier")
}

fn rs256(private_pem: &str, kid: Option<&str>) -> String {
    sign(
        Algorithm::RS256,
        private_pem,
        kid,
        &claims("acme", "alice", 60),
    )
}

const LONG: Duration = Duration::from_secs(600);

#[tokio::test]
async fn construction_needs_no_network() {
    // Nothing listens there; the verifier is still built, and tokens fail "unknown key id".
    let v = jwks_verifier("http://127.0.0.1:9/jwks.json", LONG, LONG);
    let t = rs256(&keys().rsa.private_pem, Some("k1"));
    refused(&v, &t, error::UNKNOWN_KID).await;
}

#[tokio::test]
async fn rotation_is_picked_up_on_an_unknown_kid() {
    let k = keys();
    let server = JwksServer::start(
        vec![jwk(&k.rsa.public_pem, Some("k1"), Some("RS256"))],
        Duration::ZERO,
    )
    .await;
    let v = jwks_verifier(&server.url, Duration::from_millis(200), LONG);
    assert_eq!(server.hits(), 0, "no fetch at construction");

    let id = check(&v, &rs256(&k.rsa.private_pem, Some("k1")))
        .await
        .expect("k1 valid");
    assert_eq!(id.user, "alice");
    assert_eq!(server.hits(), 1);
    // Cached: no more fetches.
    assert!(check(&v, &rs256(&k.rsa.private_pem, Some("k1")))
        .await
        .is_ok());
    assert_eq!(server.hits(), 1);

    // The provider rotates to k2.
    server.set_keys(vec![jwk(&k.rsa2.public_pem, Some("k2"), Some("RS256"))]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let id = check(&v, &rs256(&k.rsa2.private_pem, Some("k2")))
        .await
        .expect("k2 valid after refetch");
    assert_eq!(id.org, "acme");
    assert_eq!(server.hits(), 2);
    // k1 is gone from the provider, so from us too.
    tokio::time::sleep(Duration::from_millis(250)).await;
    refused(
        &v,
        &rs256(&k.rsa.private_pem, Some("k1")),
        error::UNKNOWN_KID,
    )
    .await;
}

#[tokio::test]
async fn flood_of_random_kids_costs_one_fetch() {
    let k = keys();
    // Each answer takes 200 ms, so the flood arrives while the first fetch is in flight.
    let server = JwksServer::start(
        vec![jwk(&k.rsa.public_pem, Some("k1"), None)],
        Duration::from_millis(200),
    )
    .await;
    let v = Arc::new(jwks_verifier(&server.url, Duration::from_secs(10), LONG));

    let tokens: Vec<String> = (0..50)
        .map(|i| rs256(&k.rsa.private_pem, Some(&format!("random-{i}"))))
        .collect();
    let results = join_all(tokens.iter().map(|t| check(&v, t))).await;
    for r in &results {
        assert_eq!(
            r.as_ref().expect_err("unknown kid").description,
            error::UNKNOWN_KID
        );
    }
    assert_eq!(server.hits(), 1, "single flight");
    assert_eq!(v.jwks().expect("jwks").attempts(), 1);

    // Within the period, a second flood fetches nothing.
    let results = join_all(tokens.iter().map(|t| check(&v, t))).await;
    assert!(results.iter().all(Result::is_err));
    assert_eq!(server.hits(), 1, "rate limited");

    // The one fetch did bring the real key.
    assert!(check(&v, &rs256(&k.rsa.private_pem, Some("k1")))
        .await
        .is_ok());
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn refetch_allowed_again_after_the_period() {
    let k = keys();
    let server = JwksServer::start(
        vec![jwk(&k.rsa.public_pem, Some("k1"), None)],
        Duration::ZERO,
    )
    .await;
    let v = jwks_verifier(&server.url, Duration::from_millis(300), LONG);
    let bogus = rs256(&k.rsa.private_pem, Some("bogus"));
    for _ in 0..10 {
        refused(&v, &bogus, error::UNKNOWN_KID).await;
    }
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..10 {
        refused(&v, &bogus, error::UNKNOWN_KID).await;
    }
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn timer_refresh_brings_rotated_keys() {
    let k = keys();
    let server = JwksServer::start(
        vec![jwk(&k.rsa.public_pem, Some("k1"), None)],
        Duration::ZERO,
    )
    .await;
    // Unknown kids may never refetch here: only the timer can bring k2.
    let v = Arc::new(jwks_verifier(&server.url, LONG, Duration::from_millis(200)));
    v.start_background_refresh();
    v.start_background_refresh(); // a second call starts nothing more
    wait_for(|| server.hits() >= 1).await;
    assert!(check(&v, &rs256(&k.rsa.private_pem, Some("k1")))
        .await
        .is_ok());

    server.set_keys(vec![jwk(&k.rsa2.public_pem, Some("k2"), None)]);
    let hits = server.hits();
    wait_for(|| server.hits() > hits).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(check(&v, &rs256(&k.rsa2.private_pem, Some("k2")))
        .await
        .is_ok());
    // One task: about one fetch per 200 ms, not two.
    let before = server.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.hits() - before <= 3,
        "{} fetches",
        server.hits() - before
    );

    // The task stops with the verifier.
    drop(v);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_drop = server.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.hits(), after_drop);
}

#[tokio::test]
async fn failed_fetch_keeps_the_old_keys() {
    let k = keys();
    let server = JwksServer::start(
        vec![jwk(&k.rsa.public_pem, Some("k1"), None)],
        Duration::ZERO,
    )
    .await;
    let v = Arc::new(jwks_verifier(
        &server.url,
        Duration::ZERO,
        Duration::from_millis(100),
    ));
    assert!(check(&v, &rs256(&k.rsa.private_pem, Some("k1")))
        .await
        .is_ok());

    server.set_status(500);
    v.start_background_refresh();
    let hits = server.hits();
    wait_for(|| server.hits() >= hits + 2).await;
    assert!(check(&v, &rs256(&k.rsa.private_pem, Some("k1")))
        .await
        .is_ok());

    // A set with no usable key is a failure too.
    server.set_status(200);
    server.set_keys(vec![serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})]);
    let hits = server.hits();
    wait_for(|| server.hits() >= hits + 2).await;
    assert!(check(&v, &rs256(&k.rsa.private_pem, Some("k1")))
        .await
        .is_ok());
}

#[tokio::test]
async fn ec_and_okp_keys_and_keys_without_kid() {
    let k = keys();
    let server = JwksServer::start(
        vec![
            jwk(&k.ec.public_pem, Some("ec"), Some("ES256")),
            jwk(&k.ec384.public_pem, Some("ec384"), None),
            jwk(&k.ed.public_pem, None, None),
        ],
        Duration::ZERO,
    )
    .await;
    let v = jwks_verifier(&server.url, LONG, LONG);
    let c = claims("acme", "a", 60);
    assert!(check(
        &v,
        &sign(Algorithm::ES256, &k.ec.private_pem, Some("ec"), &c)
    )
    .await
    .is_ok());
    assert!(check(
        &v,
        &sign(Algorithm::ES384, &k.ec384.private_pem, Some("ec384"), &c)
    )
    .await
    .is_ok());
    // No kid in the token: keys without kid, then any key allowing the alg.
    assert!(
        check(&v, &sign(Algorithm::EdDSA, &k.ed.private_pem, None, &c))
            .await
            .is_ok()
    );
    assert!(
        check(&v, &sign(Algorithm::ES256, &k.ec.private_pem, None, &c))
            .await
            .is_ok()
    );
    // The right kid with the wrong algorithm.
    refused(
        &v,
        &sign(Algorithm::ES384, &k.ec384.private_pem, Some("ec"), &c),
        error::ALGORITHM,
    )
    .await;
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn jwk_alg_pins_the_key() {
    let k = keys();
    let server = JwksServer::start(
        vec![jwk(&k.rsa.public_pem, Some("k1"), Some("RS256"))],
        Duration::ZERO,
    )
    .await;
    let v = jwks_verifier(&server.url, LONG, LONG);
    let ps = sign(
        Algorithm::PS256,
        &k.rsa.private_pem,
        Some("k1"),
        &claims("acme", "a", 60),
    );
    refused(&v, &ps, error::ALGORITHM).await;
    let wrong_key = rs256(&k.rsa2.private_pem, Some("k1"));
    refused(&v, &wrong_key, error::BAD_SIGNATURE).await;
}

#[tokio::test]
async fn hs256_never_verified_by_a_jwks() {
    let k = keys();
    let server = JwksServer::start(
        vec![jwk(&k.rsa.public_pem, Some("k1"), None)],
        Duration::ZERO,
    )
    .await;
    let v = jwks_verifier(&server.url, LONG, LONG);
    let confused = sign(
        Algorithm::HS256,
        &k.rsa.public_pem,
        Some("k1"),
        &claims("acme", "a", 60),
    );
    refused(&v, &confused, error::ALGORITHM).await;
    assert_eq!(server.hits(), 0, "refused before any fetch");
}

/// Polls `ready` for up to 5 s.
async fn wait_for(ready: impl Fn() -> bool) {
    for _ in 0..500 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[test]
fn timer_refresh_outside_a_runtime_runs_on_its_own_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let k = keys();
    let server = rt.block_on(JwksServer::start(
        vec![jwk(&k.rsa.public_pem, Some("k1"), None)],
        Duration::ZERO,
    ));
    let v = Arc::new(jwks_verifier(&server.url, LONG, Duration::from_millis(100)));
    // Not inside the runtime here.
    v.start_background_refresh();
    for _ in 0..500 {
        if server.hits() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(server.hits() >= 2, "timer fetches: {}", server.hits());
    assert!(rt
        .block_on(check(&v, &rs256(&k.rsa.private_pem, Some("k1"))))
        .is_ok());
}
