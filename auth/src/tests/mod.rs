//! The verifier end to end, with real keys: static keys here, JWKS in `jwks.rs`.

mod jwks;
mod proptests;
mod support;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use super::error;
use super::{AuthError, AuthErrorKind, AuthSettings, Identity, Verifier};
use support::{bearer, claims, keys, now, raw_token, sign, write_pem};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn hs256_settings() -> AuthSettings {
    AuthSettings {
        hs256_secret: Some(SECRET.into()),
        ..AuthSettings::default()
    }
}

/// A verifier for one PEM public key (the temp dir can go: the key is read at construction).
fn pem_verifier(pem: &str, tweak: impl FnOnce(&mut AuthSettings)) -> Verifier {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = AuthSettings {
        public_key_file: Some(write_pem(dir.path(), "key.pem", pem)),
        ..AuthSettings::default()
    };
    tweak(&mut settings);
    Verifier::new(settings).expect("verifier")
}

fn verifier(settings: AuthSettings) -> Verifier {
    Verifier::new(settings).expect("verifier")
}

async fn check(v: &Verifier, token: &str) -> Result<Identity, AuthError> {
    v.verify(Some(&bearer(token))).await
}

/// Asserts an `invalid_token` refusal with `description`, which must not echo the token.
async fn refused(v: &Verifier, token: &str, description: &str) {
    let e = check(v, token).await.expect_err("refused");
    assert_eq!(e.kind, AuthErrorKind::InvalidToken, "{e:?}");
    assert_eq!(e.description, description);
    assert!(!e.www_authenticate().contains(token));
}

fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, SECRET, None, claims)
}

#[tokio::test]
async fn hs256_valid() {
    let v = verifier(hs256_settings());
    let c = claims("acme", "alice", 60);
    let id = check(&v, &hs(&c)).await.expect("valid");
    assert_eq!(
        id,
        Identity {
            user: "alice".into(),
            org: "acme".into(),
            roles: vec![],
            expires_at: c["exp"].as_u64().expect("exp"),
        }
    );
}

#[tokio::test]
async fn rsa_key_verifies_rs_and_ps_algorithms() {
    let k = &keys().rsa;
    let v = pem_verifier(&k.public_pem, |_| {});
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
    ] {
        let t = sign(alg, &k.private_pem, None, &claims("acme", "alice", 60));
        let id = check(&v, &t)
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        assert_eq!(id.org, "acme");
    }
}

#[tokio::test]
async fn rsa_pkcs1_public_key_file() {
    let k = keys();
    let v = pem_verifier(&k.rsa_pkcs1_pem, |_| {});
    let t = sign(
        Algorithm::RS256,
        &k.rsa.private_pem,
        None,
        &claims("acme", "a", 60),
    );
    assert!(check(&v, &t).await.is_ok());
}

#[tokio::test]
async fn es256_valid() {
    let k = &keys().ec;
    let v = pem_verifier(&k.public_pem, |_| {});
    let t = sign(
        Algorithm::ES256,
        &k.private_pem,
        None,
        &claims("acme", "alice", 60),
    );
    assert_eq!(check(&v, &t).await.expect("valid").user, "alice");
}

#[tokio::test]
async fn es384_valid() {
    let k = &keys().ec384;
    let v = pem_verifier(&k.public_pem, |_| {});
    let t = sign(
        Algorithm::ES384,
        &k.private_pem,
        None,
        &claims("acme", "alice", 60),
    );
    assert!(check(&v, &t).await.is_ok());
    // A P-384 key allows ES384 only.
    let p256 = sign(
        Algorithm::ES256,
        &keys().ec.private_pem,
        None,
        &claims("acme", "a", 60),
    );
    refused(&v, &p256, error::ALGORITHM).await;
}

#[tokio::test]
async fn eddsa_valid() {
    let k = &keys().ed;
    let v = pem_verifier(&k.public_pem, |_| {});
    let t = sign(
        Algorithm::EdDSA,
        &k.private_pem,
        None,
        &claims("acme", "alice", 60),
    );
    assert!(check(&v, &t).await.is_ok());
}

#[tokio::test]
async fn certificate_file_uses_its_public_key() {
    let k = keys();
    let v = pem_verifier(&k.ec_cert_pem, |_| {});
    let t = sign(
        Algorithm::ES256,
        &k.ec.private_pem,
        None,
        &claims("acme", "a", 60),
    );
    assert!(check(&v, &t).await.is_ok());
}

#[tokio::test]
async fn expired() {
    let v = verifier(hs256_settings());
    refused(&v, &hs(&claims("acme", "a", -120)), error::EXPIRED).await;
}

#[tokio::test]
async fn exp_is_required() {
    let v = verifier(hs256_settings());
    let t = hs(&json!({"sub": "a", "org": "acme"}));
    refused(&v, &t, "token has no exp claim").await;
    let t = hs(&json!({"sub": "a", "org": "acme", "exp": "tomorrow"}));
    refused(&v, &t, "token has no exp claim").await;
}

#[tokio::test]
async fn nbf_in_the_future() {
    let v = verifier(hs256_settings());
    let mut c = claims("acme", "a", 600);
    c["nbf"] = json!(now() + 300);
    refused(&v, &hs(&c), error::NOT_YET_VALID).await;
    c["nbf"] = json!(now() - 1);
    assert!(check(&v, &hs(&c)).await.is_ok());
}

#[tokio::test]
async fn leeway_applies_to_exp_and_nbf() {
    let lenient = verifier(AuthSettings {
        leeway: Duration::from_secs(30),
        ..hs256_settings()
    });
    let strict = verifier(AuthSettings {
        leeway: Duration::ZERO,
        ..hs256_settings()
    });
    let just_expired = hs(&claims("acme", "a", -10));
    assert!(check(&lenient, &just_expired).await.is_ok());
    refused(&strict, &just_expired, error::EXPIRED).await;

    let mut c = claims("acme", "a", 600);
    c["nbf"] = json!(now() + 10);
    let almost_valid = hs(&c);
    assert!(check(&lenient, &almost_valid).await.is_ok());
    refused(&strict, &almost_valid, error::NOT_YET_VALID).await;
}

#[tokio::test]
async fn issuer_checked_when_configured() {
    let v = verifier(AuthSettings {
        issuer: Some("https://idp.example".into()),
        ..hs256_settings()
    });
    let mut c = claims("acme", "a", 60);
    c["iss"] = json!("https://idp.example");
    assert!(check(&v, &hs(&c)).await.is_ok());
    c["iss"] = json!("https://evil.example");
    refused(&v, &hs(&c), error::WRONG_ISSUER).await;
    refused(&v, &hs(&claims("acme", "a", 60)), "token has no iss claim").await;
    // Not configured: any issuer.
    c["iss"] = json!("https://evil.example");
    assert!(check(&verifier(hs256_settings()), &hs(&c)).await.is_ok());
}

#[tokio::test]
async fn audience_string_or_array() {
    let v = verifier(AuthSettings {
        audience: Some("corral".into()),
        ..hs256_settings()
    });
    let mut c = claims("acme", "a", 60);
    for ok in [json!("corral"), json!(["other", "corral"])] {
        c["aud"] = ok;
        assert!(check(&v, &hs(&c)).await.is_ok(), "{}", c["aud"]);
    }
    for wrong in [json!("other"), json!(["other", "another"]), json!([])] {
        c["aud"] = wrong;
        refused(&v, &hs(&c), error::WRONG_AUDIENCE).await;
    }
    refused(&v, &hs(&claims("acme", "a", 60)), "token has no aud claim").await;
    // Not configured: a token for some audience still passes.
    c["aud"] = json!("other");
    assert!(check(&verifier(hs256_settings()), &hs(&c)).await.is_ok());
}

#[tokio::test]
async fn token_without_org_refused() {
    let v = verifier(hs256_settings());
    let t = hs(&json!({"sub": "a", "exp": now() + 60}));
    refused(&v, &t, "token has no org claim").await;
}

#[tokio::test]
async fn configured_claim_names_and_roles() {
    let v = verifier(AuthSettings {
        org_claim: "tenant".into(),
        user_claim: "uid".into(),
        role_claim: Some("roles".into()),
        ..hs256_settings()
    });
    let t = hs(&json!({"uid": "u1", "tenant": "t1", "roles": ["admin", "dev"], "exp": now() + 60}));
    let id = check(&v, &t).await.expect("valid");
    assert_eq!((id.user.as_str(), id.org.as_str()), ("u1", "t1"));
    assert_eq!(id.roles, vec!["admin", "dev"]);
    let t = hs(&json!({"uid": "u1", "tenant": "t1", "roles": "admin", "exp": now() + 60}));
    assert_eq!(check(&v, &t).await.expect("valid").roles, vec!["admin"]);
}

#[tokio::test]
async fn alg_none_refused() {
    let v = verifier(hs256_settings());
    let payload = claims("acme", "a", 60);
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        refused(&v, &raw_token(&header, &payload, ""), error::ALGORITHM).await;
        // With a signature borrowed from a real token.
        let real = hs(&payload);
        let sig = real.rsplit('.').next().expect("signature");
        refused(&v, &raw_token(&header, &payload, sig), error::ALGORITHM).await;
    }
}

#[tokio::test]
async fn tampered_payload_refused() {
    let k = &keys().rsa;
    let v = pem_verifier(&k.public_pem, |_| {});
    let t = sign(
        Algorithm::RS256,
        &k.private_pem,
        None,
        &claims("acme", "alice", 60),
    );
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    // Flip one character of the payload, keep the signature.
    let mut payload: Vec<u8> = parts[1].clone().into_bytes();
    payload[5] = if payload[5] == b'A' { b'B' } else { b'A' };
    parts[1] = String::from_utf8(payload).expect("ascii");
    refused(&v, &parts.join("."), error::BAD_SIGNATURE).await;

    // A forged payload (another org) under the original signature.
    let forged = raw_token(
        &json!({"alg": "RS256", "typ": "JWT"}),
        &claims("globex", "alice", 60),
        t.rsplit('.').next().expect("signature"),
    );
    refused(&v, &forged, error::BAD_SIGNATURE).await;
}

#[tokio::test]
async fn hs256_keyed_with_the_rsa_public_key_refused() {
    let k = &keys().rsa;
    let confused = sign(
        Algorithm::HS256,
        &k.public_pem,
        None,
        &claims("acme", "mallory", 60),
    );
    // Only the RSA key configured: HS256 is not an algorithm of any key.
    let v = pem_verifier(&k.public_pem, |_| {});
    refused(&v, &confused, error::ALGORITHM).await;
    // With a secret as well, HS256 is tried against the secret only.
    let both = pem_verifier(&k.public_pem, |s| s.hs256_secret = Some(SECRET.into()));
    refused(&both, &confused, error::BAD_SIGNATURE).await;
}

#[tokio::test]
async fn algorithm_must_fit_the_key_type() {
    let k = keys();
    let rsa_only = pem_verifier(&k.rsa.public_pem, |_| {});
    let es = sign(
        Algorithm::ES256,
        &k.ec.private_pem,
        None,
        &claims("acme", "a", 60),
    );
    refused(&rsa_only, &es, error::ALGORITHM).await;
    let ec_only = pem_verifier(&k.ec.public_pem, |_| {});
    let rs = sign(
        Algorithm::RS256,
        &k.rsa.private_pem,
        None,
        &claims("acme", "a", 60),
    );
    refused(&ec_only, &rs, error::ALGORITHM).await;
    let hs_only = verifier(hs256_settings());
    refused(&hs_only, &rs, error::ALGORITHM).await;
    // HS384 is not granted to the secret.
    let hs384 = sign(Algorithm::HS384, SECRET, None, &claims("acme", "a", 60));
    refused(&hs_only, &hs384, error::ALGORITHM).await;
}

#[tokio::test]
async fn several_sources_each_verify_their_tokens() {
    let k = keys();
    let v = pem_verifier(&k.ed.public_pem, |s| s.hs256_secret = Some(SECRET.into()));
    assert!(check(&v, &hs(&claims("acme", "a", 60))).await.is_ok());
    let ed = sign(
        Algorithm::EdDSA,
        &k.ed.private_pem,
        None,
        &claims("acme", "a", 60),
    );
    assert!(check(&v, &ed).await.is_ok());
    let wrong_secret = sign(
        Algorithm::HS256,
        "another-secret",
        None,
        &claims("acme", "a", 60),
    );
    refused(&v, &wrong_secret, error::BAD_SIGNATURE).await;
}

#[tokio::test]
async fn signed_by_another_key_refused() {
    let k = keys();
    let v = pem_verifier(&k.rsa.public_pem, |_| {});
    let t = sign(
        Algorithm::RS256,
        &k.rsa2.private_pem,
        None,
        &claims("acme", "a", 60),
    );
    refused(&v, &t, error::BAD_SIGNATURE).await;
}

#[tokio::test]
async fn garbage_headers() {
    let v = verifier(hs256_settings());
    for garbage in [
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer ...",
        "Bearer e30.e30.e30",
    ] {
        let e = v.verify(Some(garbage)).await.expect_err("refused");
        assert_eq!(e, AuthError::invalid(error::MALFORMED), "{garbage}");
    }
    let e = v
        .verify(Some("Basic dXNlcjpwYXNz"))
        .await
        .expect_err("refused");
    assert_eq!(e.kind, AuthErrorKind::MissingToken);
    assert_eq!(e.description, error::UNSUPPORTED_SCHEME);
    assert_eq!(e.www_authenticate(), "Bearer realm=\"corral\"");
}

#[tokio::test]
async fn missing_bearer() {
    let v = verifier(hs256_settings());
    let token = hs(&claims("acme", "a", 60));
    for value in [None, Some(""), Some("Bearer"), Some(token.as_str())] {
        let e = v.verify(value).await.expect_err("refused");
        assert_eq!(e, AuthError::missing(error::MISSING_TOKEN), "{value:?}");
    }
}

#[tokio::test]
async fn oversized_header_refused() {
    let v = verifier(hs256_settings());
    let value = format!("Bearer {}", "A".repeat(16 * 1024));
    let e = v.verify(Some(&value)).await.expect_err("refused");
    assert_eq!(e, AuthError::invalid(error::TOO_LARGE));
}

#[test]
fn settings_errors_name_the_setting_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.pem");
    let e = Verifier::new(AuthSettings {
        public_key_file: Some(missing.clone()),
        ..AuthSettings::default()
    })
    .err()
    .expect("error");
    assert!(
        e.starts_with(&format!("JWT_PUBLIC_KEY_FILE={}: ", missing.display())),
        "{e}"
    );

    let junk = write_pem(dir.path(), "junk.pem", "hello");
    let e = Verifier::new(AuthSettings {
        public_key_file: Some(junk.clone()),
        ..AuthSettings::default()
    })
    .err()
    .expect("error");
    assert_eq!(
        e,
        format!(
            "JWT_PUBLIC_KEY_FILE={}: not a PEM public key",
            junk.display()
        )
    );

    let private = write_pem(dir.path(), "private.pem", &keys().ec.private_pem);
    let e = Verifier::new(AuthSettings {
        public_key_file: Some(private),
        ..AuthSettings::default()
    })
    .err()
    .expect("error");
    assert!(e.contains("private key"), "{e}");

    let e = Verifier::new(AuthSettings {
        jwks_url: Some("ftp://idp.example/keys".into()),
        ..AuthSettings::default()
    })
    .err()
    .expect("error");
    assert!(e.starts_with("JWKS_URL=ftp://idp.example/keys: "), "{e}");

    let e = Verifier::new(AuthSettings::default()).err().expect("error");
    assert!(e.contains("no key configured"), "{e}");
}

#[test]
fn settings_debug_hides_the_secret() {
    let shown = format!("{:?}", hs256_settings());
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn verifier_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Verifier>();
    fn send<T: Send>(_: &T) {}
    let v = Arc::new(verifier(hs256_settings()));
    let fut = v.verify(None);
    send(&fut);
}
