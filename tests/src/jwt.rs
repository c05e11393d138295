//! JWT helpers for end-to-end tests: keys made by the `openssl` CLI, signed tokens, JWKs and a
//! JWKS server that can rotate its keys and counts how often it is fetched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

/// An RSA 2048, an EC P-256 and an Ed25519 key pair. Private keys are PKCS#8 PEM text (for
/// signing here); public keys are SPKI PEM files in `dir` (for `JWT_PUBLIC_KEY_FILE`).
pub struct TestKeys {
    pub dir: tempfile::TempDir,
    pub rsa_private_pem: String,
    pub rsa_public_pem_path: PathBuf,
    pub ec_private_pem: String,
    pub ec_public_pem_path: PathBuf,
    pub ed_private_pem: String,
    pub ed_public_pem_path: PathBuf,
}

impl TestKeys {
    /// Generates fresh keys with the `openssl` command-line tool.
    pub fn generate() -> TestKeys {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rsa_private_pem, rsa_public_pem_path) = key_pair(
            dir.path(),
            "rsa",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        );
        let (ec_private_pem, ec_public_pem_path) = key_pair(
            dir.path(),
            "ec",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let (ed_private_pem, ed_public_pem_path) =
            key_pair(dir.path(), "ed", &["-algorithm", "ED25519"]);
        TestKeys {
            dir,
            rsa_private_pem,
            rsa_public_pem_path,
            ec_private_pem,
            ec_public_pem_path,
            ed_private_pem,
            ed_public_pem_path,
        }
    }
}

/// `openssl genpkey` then `openssl pkey -pubout`: the private PEM text and the public PEM path.
fn key_pair(dir: &Path, name: &str, genpkey: &[&str]) -> (String, PathBuf) {
    let private = format!("{name}.pem");
    let public = format!("{name}.pub.pem");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", &private]);
    openssl(dir, &args);
    openssl(dir, &["pkey", "-in", &private, "-pubout", "-out", &public]);
    let private_pem = std::fs::read_to_string(dir.join(&private)).expect("read private key");
    (private_pem, dir.join(public))
}

/// Runs `openssl` in `dir` (file names stay relative).
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (is it installed?)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn encode(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign JWT")
}

/// An HS256 token (the secret's UTF-8 bytes are the key, as the gateway's `JWT_SECRET`).
pub fn hs256(secret: &str, claims: &Value) -> String {
    encode(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        None,
        claims,
    )
}

/// An RS256 token signed with an RSA private key (PKCS#8 or PKCS#1 PEM).
pub fn rs256(private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA private key");
    encode(Algorithm::RS256, &key, kid, claims)
}

/// An ES256 token signed with an EC P-256 private key (PKCS#8 PEM).
pub fn es256(private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(private_pem.as_bytes()).expect("EC private key");
    encode(Algorithm::ES256, &key, kid, claims)
}

/// An EdDSA token signed with an Ed25519 private key (PKCS#8 PEM).
pub fn eddsa(private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(private_pem.as_bytes()).expect("Ed25519 private key");
    encode(Algorithm::EdDSA, &key, kid, claims)
}

/// `sub`, `org`, `iat = now` and `exp = now + ttl_s` (negative for an expired token).
pub fn claims(org: &str, user: &str, ttl_s: i64) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    json!({"sub": user, "org": org, "iat": now, "exp": now + ttl_s})
}

/// The JWK of an RSA public key PEM file (SPKI or PKCS#1): kty RSA, n, e, kid, alg RS256,
/// use sig.
pub fn rsa_jwk(public_pem_path: &Path, kid: &str) -> Value {
    let pem = std::fs::read_to_string(public_pem_path).expect("read public key");
    let key = rsa::RsaPublicKey::from_public_key_pem(&pem)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(&pem))
        .expect("RSA public key PEM");
    json!({
        "kty": "RSA",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
    })
}

#[derive(Clone)]
struct JwksState {
    document: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

/// Serves a JWKS at `url()` on a local port, for `JWKS_URL`.
pub struct JwksServer {
    addr: std::net::SocketAddr,
    state: JwksState,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving `keys`: a JWKS document (`{"keys": [...]}`), an array of JWKs, or one
    /// JWK.
    pub async fn start(keys: Value) -> JwksServer {
        let state = JwksState {
            document: Arc::new(Mutex::new(jwks_document(keys))),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS server");
        let addr = listener.local_addr().expect("JWKS server address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer { addr, state, task }
    }

    /// The `JWKS_URL` to give the gateway.
    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Replaces the served keys (key rotation at the provider); same forms as `start`.
    pub fn set_keys(&self, keys: Value) {
        *self.state.document.lock().expect("JWKS lock") = jwks_document(keys);
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_jwks(State(state): State<JwksState>) -> Json<Value> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    Json(state.document.lock().expect("JWKS lock").clone())
}

fn jwks_document(keys: Value) -> Value {
    match keys {
        Value::Array(_) => json!({ "keys": keys }),
        Value::Object(ref o) if o.contains_key("keys") => keys,
        Value::Object(_) => json!({ "keys": [keys] }),
        other => panic!("a JWKS, an array of JWKs or a JWK, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a token's payload without verifying it.
    fn payload(token: &str) -> Value {
        let part = token.split('.').nth(1).expect("payload");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
    }

    fn header(token: &str) -> Value {
        let part = token.split('.').next().expect("header");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
    }

    #[test]
    fn keys_sign_tokens_that_their_public_keys_verify() {
        let keys = TestKeys::generate();
        let c = claims("acme", "alice", 60);
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.validate_aud = false;

        let t = rs256(&keys.rsa_private_pem, Some("k1"), &c);
        assert_eq!(header(&t)["kid"], "k1");
        let pem = std::fs::read(&keys.rsa_public_pem_path).expect("pem");
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).expect("rsa");
        jsonwebtoken::decode::<Value>(&t, &key, &v).expect("RS256 verifies");

        // The JWK describes the same key.
        let jwk = rsa_jwk(&keys.rsa_public_pem_path, "k1");
        let jwk_key = jsonwebtoken::DecodingKey::from_rsa_components(
            jwk["n"].as_str().expect("n"),
            jwk["e"].as_str().expect("e"),
        )
        .expect("jwk");
        jsonwebtoken::decode::<Value>(&t, &jwk_key, &v).expect("JWK verifies");
        assert_eq!(
            (jwk["kid"].as_str(), jwk["alg"].as_str()),
            (Some("k1"), Some("RS256"))
        );

        let t = es256(&keys.ec_private_pem, None, &c);
        let pem = std::fs::read(&keys.ec_public_pem_path).expect("pem");
        let key = jsonwebtoken::DecodingKey::from_ec_pem(&pem).expect("ec");
        v.algorithms = vec![Algorithm::ES256];
        jsonwebtoken::decode::<Value>(&t, &key, &v).expect("ES256 verifies");

        let t = eddsa(&keys.ed_private_pem, None, &c);
        let pem = std::fs::read(&keys.ed_public_pem_path).expect("pem");
        let key = jsonwebtoken::DecodingKey::from_ed_pem(&pem).expect("ed");
        v.algorithms = vec![Algorithm::EdDSA];
        jsonwebtoken::decode::<Value>(&t, &key, &v).expect("EdDSA verifies");

        let t = hs256("secret", &c);
        assert_eq!(header(&t)["alg"], "HS256");
        assert_eq!(payload(&t)["org"], "acme");
        assert_eq!(payload(&t)["sub"], "alice");
    }

    #[test]
    fn claims_expire_after_ttl() {
        let c = claims("o", "u", -30);
        let (iat, exp) = (
            c["iat"].as_i64().expect("iat"),
            c["exp"].as_i64().expect("exp"),
        );
        assert_eq!(exp - iat, -30);
    }

    #[tokio::test]
    async fn jwks_server_serves_rotates_and_counts() {
        let server = JwksServer::start(json!([{"kty": "OKP", "kid": "a"}])).await;
        let client = reqwest::Client::new();
        let get = || async {
            client
                .get(server.url())
                .send()
                .await
                .expect("fetch")
                .json::<Value>()
                .await
                .expect("json")
        };
        assert_eq!(get().await["keys"][0]["kid"], "a");
        server.set_keys(json!({"kty": "OKP", "kid": "b"}));
        assert_eq!(get().await["keys"][0]["kid"], "b");
        server.set_keys(json!({"keys": []}));
        assert_eq!(get().await["keys"], json!([]));
        assert_eq!(server.fetches(), 3);
    }
}
