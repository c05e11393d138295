//! Test keys (made by the `openssl` CLI, once per test binary), token signing, and a tiny JWKS
//! server that counts its requests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::keys::{parse_public_pem, KeyMaterial};

/// A private key (PEM, for signing) and its public key (PEM).
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

pub struct TestKeys {
    pub rsa: KeyPair,
    pub rsa2: KeyPair,
    pub ec: KeyPair,
    pub ec384: KeyPair,
    pub ed: KeyPair,
    /// `rsa`'s public key as PKCS#1 `RSA PUBLIC KEY`.
    pub rsa_pkcs1_pem: String,
    /// A self-signed certificate for `ec`.
    pub ec_cert_pem: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pair(dir: &Path, name: &str, genpkey: &[&str]) -> KeyPair {
    let private = format!("{name}.pem");
    let public = format!("{name}.pub.pem");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", &private]);
    openssl(dir, &args);
    openssl(dir, &["pkey", "-in", &private, "-pubout", "-out", &public]);
    KeyPair {
        private_pem: std::fs::read_to_string(dir.join(&private)).expect("read private key"),
        public_pem: std::fs::read_to_string(dir.join(&public)).expect("read public key"),
    }
}

/// The keys all tests share (generating RSA keys is the slow part, so it happens once).
pub fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let rsa = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
        TestKeys {
            rsa: pair(d, "rsa", &rsa),
            rsa2: pair(d, "rsa2", &rsa),
            ec: pair(
                d,
                "ec",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
            ec384: pair(
                d,
                "ec384",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            ),
            ed: pair(d, "ed", &["-algorithm", "ED25519"]),
            rsa_pkcs1_pem: {
                openssl(
                    d,
                    &[
                        "rsa",
                        "-in",
                        "rsa.pem",
                        "-RSAPublicKey_out",
                        "-out",
                        "rsa.pkcs1.pem",
                    ],
                );
                std::fs::read_to_string(d.join("rsa.pkcs1.pem")).expect("read pkcs1")
            },
            ec_cert_pem: {
                openssl(
                    d,
                    &[
                        "req", "-x509", "-new", "-key", "ec.pem", "-subj", "/CN=idp", "-days", "1",
                        "-out", "ec.crt",
                    ],
                );
                std::fs::read_to_string(d.join("ec.crt")).expect("read certificate")
            },
        }
    })
}

/// Writes `pem` into `dir` and returns its path.
pub fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write pem");
    path
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// `sub`, `org`, `iat` and `exp = now + ttl_s`.
pub fn claims(org: &str, user: &str, ttl_s: i64) -> Value {
    json!({"sub": user, "org": org, "iat": now(), "exp": now() + ttl_s})
}

/// Signs `claims` with `alg` and the PEM private key (or, for HS256, the secret).
pub fn sign(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(key.as_bytes())
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            EncodingKey::from_ec_pem(key.as_bytes()).expect("EC key")
        }
        Algorithm::EdDSA => EncodingKey::from_ed_pem(key.as_bytes()).expect("Ed key"),
        _ => EncodingKey::from_rsa_pem(key.as_bytes()).expect("RSA key"),
    };
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// A token with a hand-made header and payload and the given signature part.
pub fn raw_token(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A JWK for the public key `public_pem`, with `kid` and optional `alg`.
pub fn jwk(public_pem: &str, kid: Option<&str>, alg: Option<&str>) -> Value {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let mut jwk = match parse_public_pem(public_pem).expect("public key") {
        KeyMaterial::Rsa { n, e } => json!({"kty": "RSA", "n": b64(&n), "e": b64(&e)}),
        KeyMaterial::Ec { p384, x, y } => {
            json!({"kty": "EC", "crv": if p384 { "P-384" } else { "P-256" }, "x": b64(&x), "y": b64(&y)})
        }
        KeyMaterial::Ed25519 { x } => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&x)}),
    };
    jwk["use"] = json!("sig");
    if let Some(kid) = kid {
        jwk["kid"] = json!(kid);
    }
    if let Some(alg) = alg {
        jwk["alg"] = json!(alg);
    }
    jwk
}

/// Serves a JWKS over raw HTTP/1.1 (one request per connection), counting requests.
pub struct JwksServer {
    pub url: String,
    body: Arc<Mutex<String>>,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// `keys` is a list of JWKs; each answer waits `delay` (so concurrent fetches overlap).
    pub async fn start(keys: Vec<Value>, delay: Duration) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let body = Arc::new(Mutex::new(json!({"keys": keys}).to_string()));
        let status = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, s, h) = (body.clone(), status.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (b, s, h) = (b.clone(), s.clone(), h.clone());
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let body = b.lock().expect("body").clone();
                    let status = s.load(Ordering::SeqCst);
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        JwksServer {
            url,
            body,
            status,
            hits,
            task,
        }
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.body.lock().expect("body") = json!({"keys": keys}).to_string();
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
