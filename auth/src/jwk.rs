//! JSON Web Keys (RFC 7517, 7518 §6, 8037) → verification keys.
//!
//! Each key of a set is read on its own: a provider may publish encryption keys or algorithms
//! we do not support next to its signing keys, and those must not spoil the whole set. Only
//! public signature keys are taken (`kty` RSA, EC P-256/P-384, OKP Ed25519); symmetric `oct`
//! keys never come from a JWKS URL.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::keys::{KeyMaterial, VerifyKey};
use super::token::algorithm_from_name;

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// The usable keys of a JWKS document (`{"keys": [...]}`), and why each other key was skipped.
pub(super) fn parse_jwks(body: &[u8]) -> Result<(Vec<VerifyKey>, Vec<String>), String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(key) => keys.push(key),
            Err(why) => {
                let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
                skipped.push(format!("key {i} (kid {kid:?}): {why}"));
            }
        }
    }
    Ok((keys, skipped))
}

/// One JWK, or why it cannot verify our tokens.
pub(super) fn parse_jwk(jwk: &Value) -> Result<VerifyKey, String> {
    let raw = RawJwk::deserialize(jwk).map_err(|e| format!("malformed JWK: {e}"))?;
    if let Some(use_) = &raw.use_ {
        if use_ != "sig" {
            return Err(format!("use {use_:?} is not \"sig\""));
        }
    }
    if let Some(ops) = &raw.key_ops {
        if !ops.iter().any(|op| op == "verify") {
            return Err("key_ops has no \"verify\"".into());
        }
    }
    let pinned = match raw.alg.as_deref() {
        None => None,
        Some(name) => {
            Some(algorithm_from_name(name).ok_or_else(|| format!("unsupported alg {name:?}"))?)
        }
    };
    let material = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => KeyMaterial::Rsa {
            n: member(&raw.n, "n")?,
            e: member(&raw.e, "e")?,
        },
        ("EC", Some(crv @ ("P-256" | "P-384"))) => KeyMaterial::Ec {
            p384: crv == "P-384",
            x: member(&raw.x, "x")?,
            y: member(&raw.y, "y")?,
        },
        ("OKP", Some("Ed25519")) => KeyMaterial::Ed25519 {
            x: member(&raw.x, "x")?,
        },
        (kty, crv) => {
            return Err(match crv {
                Some(crv) => format!("unsupported key type {kty} {crv}"),
                None => format!("unsupported key type {kty}"),
            })
        }
    };
    VerifyKey::public(material, raw.kid, pinned)
}

/// A base64url member of the key (RFC 7518: no padding; some providers pad anyway).
fn member(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let value = value.as_deref().ok_or_else(|| format!("no {name:?}"))?;
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("{name:?} is not base64url"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::keys::KeyType;
    use jsonwebtoken::Algorithm;

    fn ed_x() -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes())
    }

    #[test]
    fn okp_key_with_alg_and_use() {
        let key = parse_jwk(&json!({"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "kid": "e1", "use": "sig", "alg": "EdDSA"}))
            .expect("usable");
        assert_eq!(key.kid.as_deref(), Some("e1"));
        assert_eq!(key.key_type, KeyType::Ed25519);
        assert!(key.allows(Algorithm::EdDSA));
    }

    #[test]
    fn skipped_keys() {
        let cases = [
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "use": "enc"}),
                "use",
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "key_ops": ["encrypt"]}),
                "key_ops",
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "alg": "RS256"}),
                "does not fit",
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "alg": "none"}),
                "unsupported alg",
            ),
            (
                json!({"kty": "oct", "k": "c2VjcmV0"}),
                "unsupported key type oct",
            ),
            (
                json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
                "P-521",
            ),
            (json!({"kty": "RSA", "e": "AQAB"}), "no \"n\""),
            (json!({"kty": "RSA", "n": "!!", "e": "AQAB"}), "base64url"),
            (json!({"kid": "k"}), "malformed"),
        ];
        for (jwk, why) in cases {
            let err = parse_jwk(&jwk).err().expect("skipped");
            assert!(err.contains(why), "{jwk}: {err}");
        }
    }

    #[test]
    fn one_bad_key_does_not_spoil_the_set() {
        let body = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "x": ed_x(), "kid": "good"}
        ]});
        let (keys, skipped) = parse_jwks(body.to_string().as_bytes()).expect("a set");
        assert_eq!(keys.len(), 1);
        assert_eq!(skipped.len(), 1);
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }
}
