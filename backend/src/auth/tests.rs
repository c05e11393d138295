use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::config::Config;

const SECRET: &str = "a-long-enough-test-secret-for-hs256-signing";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn verifier() -> Verifier {
    let mut config = Config::default().auth;
    config.jwt.hs256_secret = Some(SECRET.into());
    Verifier::new(&config).expect("verifier")
}

async fn check(claims: Value) -> Result<Identity, AuthError> {
    let header = format!("Bearer {}", sign(&claims));
    verifier().verify(Some(&header)).await
}

#[tokio::test]
async fn good_token_gives_identity_and_admin() {
    let id = check(json!({"sub": "alice", "org": "acme", "role": "admin", "exp": now() + 60}))
        .await
        .expect("valid");
    assert_eq!(
        (id.user.as_str(), id.org.as_str(), id.admin),
        ("alice", "acme", true)
    );
    let id = check(json!({"sub": "bob", "org": "acme", "role": ["member"], "exp": now() + 60}))
        .await
        .expect("valid");
    assert!(!id.admin);
    assert!(!id.operator);
    let id = check(
        json!({"sub": "olga", "org": "ops", "role": ["member", "operator"], "exp": now() + 60}),
    )
    .await
    .expect("valid");
    assert!(id.operator && !id.admin);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_reason() {
    let e = check(json!({"sub": "a", "org": "o", "exp": now() - 600}))
        .await
        .unwrap_err();
    assert_eq!(e.description, "token expired");
    let e = check(json!({"sub": "a", "org": "o"})).await.unwrap_err();
    assert_eq!(e.description, "token has no exp claim");
    let e = check(json!({"sub": "a", "exp": now() + 60}))
        .await
        .unwrap_err();
    assert_eq!(e.description, "token has no org claim");

    let v = verifier();
    let e = v.verify(None).await.unwrap_err();
    assert_eq!(e.kind, corral_auth::AuthErrorKind::MissingToken);
    assert_eq!(e.www_authenticate(), "Bearer realm=\"corral\"");
    let e = v.verify(Some("Bearer not-a-jwt")).await.unwrap_err();
    assert_eq!(e.description, "malformed token");
    let other = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "a", "org": "o", "exp": now() + 60}),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .expect("sign");
    let e = v
        .verify(Some(&format!("Bearer {other}")))
        .await
        .unwrap_err();
    assert_eq!(e.description, "bad signature");
    assert!(e.www_authenticate().contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn algorithm_is_never_chosen_by_the_token() {
    // An HS384 token is refused: the secret only allows HS256.
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &json!({"sub": "a", "org": "o", "exp": now() + 60}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    let e = verifier()
        .verify(Some(&format!("Bearer {t}")))
        .await
        .unwrap_err();
    assert_eq!(e.description, "algorithm not allowed");
}

#[test]
fn no_key_is_a_startup_error() {
    let e = Verifier::new(&Config::default().auth)
        .err()
        .expect("refused");
    assert!(e.contains("JWT_SECRET"), "{e}");
}
