//! Property tests of the whole bearer check ([`Verifier::verify`]): random header values,
//! random base64url segments joined with dots, valid tokens with random characters changed,
//! and headers whose `alg` was swapped. Nothing panics, every refusal has a valid challenge,
//! and only an unmodified valid token verifies. (API keys do not exist yet.)

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

use super::support::{bearer, keys, now, sign, write_pem};
use super::{AuthError, AuthSettings, Identity, Verifier, SECRET};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are kept as plain #[test]s, not as regression files in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Verifiers built once: the HS256 secret with an Ed25519 key, an RSA key alone, and a P-256
/// key alone; and one RS256 and one ES256 token (signing those is slow in debug builds).
struct Fixture {
    hs_ed: Verifier,
    rsa: Verifier,
    ec: Verifier,
    rs256: (String, Value),
    es256: (String, Value),
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let k = keys();
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = |name: &str, pem: &str| AuthSettings {
            public_key_file: Some(write_pem(dir.path(), name, pem)),
            ..AuthSettings::default()
        };
        let hs_ed = Verifier::new(AuthSettings {
            hs256_secret: Some(SECRET.into()),
            ..pem("ed.pem", &k.ed.public_pem)
        })
        .expect("verifier");
        let rsa = Verifier::new(pem("rsa.pem", &k.rsa.public_pem)).expect("verifier");
        let ec = Verifier::new(pem("ec.pem", &k.ec.public_pem)).expect("verifier");
        let c = claims_for("acme", "alice", None);
        Fixture {
            hs_ed,
            rsa,
            ec,
            rs256: (
                sign(Algorithm::RS256, &k.rsa.private_pem, None, &c),
                c.clone(),
            ),
            es256: (sign(Algorithm::ES256, &k.ec.private_pem, None, &c), c),
        }
    })
}

impl Fixture {
    fn all(&self) -> [&Verifier; 3] {
        [&self.hs_ed, &self.rsa, &self.ec]
    }
}

fn verify(v: &Verifier, authorization: Option<&str>) -> Result<Identity, AuthError> {
    // No JWKS here, so `verify` never waits on anything: a plain executor runs it.
    futures::executor::block_on(v.verify(authorization))
}

/// Checks that `value` is refused by every verifier, with a challenge that is a valid header
/// value and does not echo the token.
fn refused_everywhere(value: &str) -> Result<(), TestCaseError> {
    for v in fixture().all() {
        let got = verify(v, Some(value));
        prop_assert!(got.is_err(), "verified: {:?}", value);
        if let Err(e) = got {
            let challenge = e.www_authenticate();
            prop_assert!(
                http::HeaderValue::from_str(&challenge).is_ok(),
                "{}",
                challenge
            );
            let token = value.split_once(' ').map_or(value, |(_, t)| t).trim();
            prop_assert!(
                token.len() < 8 || !challenge.contains(token),
                "{} echoes {:?}",
                challenge,
                token
            );
        }
    }
    Ok(())
}

fn claims_for(org: &str, user: &str, extra: Option<&str>) -> Value {
    let mut c = json!({"sub": user, "org": org, "iat": now(), "exp": now() + 600});
    if let Some(x) = extra {
        c["note"] = json!(x);
    }
    c
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Algorithm names, real and not: every name a header may carry to try its luck.
fn alg_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
            "ES256", "ES384", "ES512", "EdDSA", "Ed25519", "none", "None", "NONE", "", "hs256",
            "HS256 ", "RSA-OAEP", "dir",
        ])
        .prop_map(String::from),
        1 => "[A-Za-z0-9 -]{0,8}",
    ]
}

/// One dot-separated part of a would-be JWS.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| b64(&b)),
        2 => (alg_name(), prop::option::of("[a-z0-9]{0,6}"), any::<bool>()).prop_map(
            |(alg, kid, crit)| {
                let mut h = json!({"alg": alg, "typ": "JWT"});
                if let Some(kid) = kid {
                    h["kid"] = json!(kid);
                }
                if crit {
                    h["crit"] = json!(["exp"]);
                }
                b64(h.to_string().as_bytes())
            }
        ),
        1 => Just(b64(br#"{"sub":"a","org":"acme","exp":99999999999}"#)),
        1 => "[A-Za-z0-9_=+/~-]{0,40}",
        1 => Just(String::new()),
    ]
}

/// A fresh valid token (HS256 or EdDSA, random identity) or one of the fixture's RS256 and
/// ES256 tokens, with the claims it carries.
fn valid_token() -> impl Strategy<Value = (String, Value)> {
    let id = "[a-zA-Z0-9._@-]{1,20}";
    (0u8..4, id, id, prop::option::of("[ -~]{0,30}")).prop_map(|(kind, org, user, extra)| {
        let c = claims_for(&org, &user, extra.as_deref());
        match kind {
            0 => (sign(Algorithm::HS256, SECRET, None, &c), c),
            1 => (sign(Algorithm::EdDSA, &keys().ed.private_pem, None, &c), c),
            2 => fixture().rs256.clone(),
            _ => fixture().es256.clone(),
        }
    })
}

/// Characters a changed position may take: the token alphabet, separators and others.
fn replacement() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                .chars()
                .collect::<Vec<_>>()
        ),
        1 => prop::sample::select(".=+/~ \t\"\\%".chars().collect::<Vec<_>>()),
        1 => any::<char>(),
    ]
}

fn expected_identity(c: &Value) -> Identity {
    Identity {
        user: c["sub"].as_str().expect("sub").to_string(),
        org: c["org"].as_str().expect("org").to_string(),
        roles: vec![],
        expires_at: c["exp"].as_u64().expect("exp"),
    }
}

/// The verifier that holds the key of `token`'s own algorithm.
fn verifier_for(token: &str) -> &'static Verifier {
    let f = fixture();
    if token == f.rs256.0 {
        &f.rsa
    } else if token == f.es256.0 {
        &f.ec
    } else {
        &f.hs_ed
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary `Authorization` values, alone or after a bearer scheme.
    #[test]
    fn random_values_never_verify(s in any::<String>(), scheme in 0u8..3) {
        let value = match scheme {
            0 => s,
            1 => format!("Bearer {s}"),
            _ => format!("bEaReR\t{s}"),
        };
        refused_everywhere(&value)?;
    }

    /// Random base64url segments (random bytes, JOSE headers with odd `alg`s, claims without
    /// a signature) joined with dots.
    #[test]
    fn random_segments_never_verify(parts in prop::collection::vec(segment(), 1..6)) {
        refused_everywhere(&bearer(&parts.join(".")))?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A valid token verifies, with the identity it carries; the same token with one to three
    /// characters changed never does.
    #[test]
    fn only_the_unmodified_token_verifies(
        (token, claims) in valid_token(),
        changes in prop::collection::vec((any::<Index>(), replacement()), 1..4),
    ) {
        let v = verifier_for(&token);
        let id = verify(v, Some(&bearer(&token)));
        prop_assert_eq!(id, Ok(expected_identity(&claims)));
        let mut chars: Vec<char> = token.chars().collect();
        for (at, c) in &changes {
            let at = at.index(chars.len());
            chars[at] = *c;
        }
        let changed: String = chars.into_iter().collect();
        if changed != token {
            refused_everywhere(&bearer(&changed))?;
        }
    }

    /// The header of a valid token replaced by one naming another algorithm (payload and
    /// signature kept), or the claims signed with HMAC keyed by a public key (algorithm
    /// confusion), or `none` with no signature: never verified.
    #[test]
    fn swapped_algorithms_never_verify(
        (token, claims) in valid_token(),
        alg in alg_name(),
        typ in any::<bool>(),
        confusion in 0u8..4,
    ) {
        let mut parts = token.split('.');
        let (_, payload, signature) = (parts.next(), parts.next(), parts.next());
        let (payload, signature) = (payload.expect("payload"), signature.expect("signature"));
        let header = if typ {
            json!({"alg": alg, "typ": "JWT"})
        } else {
            json!({"alg": alg})
        };
        let swapped = format!("{}.{payload}.{signature}", b64(header.to_string().as_bytes()));
        if swapped != token {
            refused_everywhere(&bearer(&swapped))?;
        }
        let none = format!("{}.{payload}.", b64(header.to_string().as_bytes()));
        refused_everywhere(&bearer(&none))?;
        let k = keys();
        let public = match confusion {
            0 => &k.rsa.public_pem,
            1 => &k.ec.public_pem,
            2 => &k.ed.public_pem,
            _ => &k.rsa_pkcs1_pem,
        };
        for hmac in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            refused_everywhere(&bearer(&sign(hmac, public, None, &claims)))?;
        }
    }
}
