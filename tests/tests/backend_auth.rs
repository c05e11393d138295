//! The backend verifies tokens itself with the gateway's settings: a PEM public key of each
//! type (the key decides the algorithm, never the token), a JWKS, issuer and audience.

use corral_tests::backend::{Api, BackendProcess, TestDb};
use corral_tests::jwt::{self, claims, JwksServer, TestKeys};
use serde_json::{json, Value};

async fn status(be: &BackendProcess, token: &str) -> (u16, Value) {
    let r = Api::new(&be.url(), Some(token.to_string()))
        .get("/api/conversations")
        .await;
    (r.status, r.body)
}

#[tokio::test]
async fn public_keys_of_each_type_and_no_algorithm_confusion() {
    let keys = TestKeys::generate();
    let db = TestDb::create().await;
    let c = claims("acme", "alice", 300);
    for (path, good) in [
        (
            &keys.rsa_public_pem_path,
            jwt::rs256(&keys.rsa_private_pem, None, &c),
        ),
        (
            &keys.ec_public_pem_path,
            jwt::es256(&keys.ec_private_pem, None, &c),
        ),
        (
            &keys.ed_public_pem_path,
            jwt::eddsa(&keys.ed_private_pem, None, &c),
        ),
    ] {
        let be = BackendProcess::builder()
            .database(&db.url())
            .env("JWT_SECRET", "")
            .env("JWT_PUBLIC_KEY_FILE", path.to_str().expect("path"))
            .start()
            .await;
        assert_eq!(status(&be, &good).await.0, 200, "{}", path.display());
        // HS256 "signed" with the public key's own bytes: the classic confusion attack.
        let pem = std::fs::read_to_string(path).expect("pem");
        let forged = jwt::hs256(&pem, &c);
        let (code, body) = status(&be, &forged).await;
        assert_eq!(code, 401);
        assert_eq!(body["error"], "algorithm not allowed");
        be.stop().await;
    }
}

#[tokio::test]
async fn jwks_issuer_and_audience() {
    let keys = TestKeys::generate();
    let jwks = JwksServer::start(jwt::rsa_jwk(&keys.rsa_public_pem_path, "k1")).await;
    let db = TestDb::create().await;
    let be = BackendProcess::builder()
        .database(&db.url())
        .env("JWT_SECRET", "")
        .env("JWKS_URL", &jwks.url())
        .env("JWT_ISSUER", "https://id.example.com")
        .env("JWT_AUDIENCE", "corral")
        .start()
        .await;
    let mut c = claims("acme", "alice", 300);
    c["iss"] = json!("https://id.example.com");
    c["aud"] = json!("corral");
    let good = jwt::rs256(&keys.rsa_private_pem, Some("k1"), &c);
    assert_eq!(status(&be, &good).await.0, 200);
    let mut wrong_aud = c.clone();
    wrong_aud["aud"] = json!("someone-else");
    let (code, body) = status(
        &be,
        &jwt::rs256(&keys.rsa_private_pem, Some("k1"), &wrong_aud),
    )
    .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("wrong audience"))
    );
    let mut no_iss = c.clone();
    no_iss.as_object_mut().expect("object").remove("iss");
    let (code, _) = status(&be, &jwt::rs256(&keys.rsa_private_pem, Some("k1"), &no_iss)).await;
    assert_eq!(code, 401);
    let (code, _) = status(&be, &jwt::rs256(&keys.rsa_private_pem, Some("other"), &c)).await;
    assert_eq!(code, 401, "an unknown kid is refused");
    be.stop().await;
}
