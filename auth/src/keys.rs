//! Verification keys, and the algorithms each key type allows.
//!
//! The rule that stops algorithm confusion (RFC 8725 §3.1) lives here: a key's type fixes the
//! algorithms it verifies, and a token's `alg` header only chooses among keys that already
//! allow it. An RSA key never verifies an HS256 token (so its public PEM bytes can never serve
//! as an HMAC secret), and no key allows `none`.
//!
//! Keys are parsed and checked once, when loaded (PEM file at start, JWKS per fetch), into
//! jsonwebtoken `DecodingKey`s ready for every request.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};

/// Kinds of key, each with a fixed set of algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyType {
    /// The shared secret (`JWT_SECRET`).
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyType {
    /// What a key of this type may verify. The only place algorithms are granted.
    pub(super) fn algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            KeyType::Hmac => &[HS256],
            KeyType::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            KeyType::EcP256 => &[ES256],
            KeyType::EcP384 => &[ES384],
            KeyType::Ed25519 => &[EdDSA],
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            KeyType::Hmac => "HMAC secret",
            KeyType::Rsa => "RSA",
            KeyType::EcP256 => "EC P-256",
            KeyType::EcP384 => "EC P-384",
            KeyType::Ed25519 => "Ed25519",
        }
    }
}

/// The algorithms any public key (PEM or JWKS) can allow: what a JWKS may serve.
pub(super) const PUBLIC_KEY_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// RSA moduli outside this range are refused when loaded: smaller ones are breakable, larger
/// ones are beyond what the RSA backend verifies.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// A public key as numbers, whichever format it came in (PEM or JWK).
pub(super) enum KeyMaterial {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { p384: bool, x: Vec<u8>, y: Vec<u8> },
    Ed25519 { x: Vec<u8> },
}

/// One key ready to verify signatures.
pub(super) struct VerifyKey {
    /// The JWK `kid`; keys from `JWT_SECRET` / `JWT_PUBLIC_KEY_FILE` have none.
    pub kid: Option<String>,
    pub key_type: KeyType,
    /// A JWK's `alg`: when present, the only algorithm the key verifies.
    pub pinned: Option<Algorithm>,
    pub decoding: DecodingKey,
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`.
    pub(super) fn allows(&self, alg: Algorithm) -> bool {
        match self.pinned {
            Some(pinned) => pinned == alg,
            None => self.key_type.algorithms().contains(&alg),
        }
    }

    /// The HS256 key of `JWT_SECRET` (the secret's UTF-8 bytes, as most issuers use them).
    pub(super) fn hmac(secret: &str) -> Result<VerifyKey, String> {
        if secret.is_empty() {
            return Err("JWT_SECRET: empty secret".into());
        }
        if secret.len() < 32 {
            // RFC 7518 §3.2 asks for at least 256 bits; short secrets can be brute-forced.
            tracing::warn!(
                bytes = secret.len(),
                "JWT_SECRET is shorter than 32 bytes; HS256 tokens signed with it can be forged by brute force"
            );
        }
        Ok(VerifyKey {
            kid: None,
            key_type: KeyType::Hmac,
            pinned: None,
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        })
    }

    /// Checks public key numbers and builds the key; `pinned` must be one of the type's
    /// algorithms.
    pub(super) fn public(
        material: KeyMaterial,
        kid: Option<String>,
        pinned: Option<Algorithm>,
    ) -> Result<VerifyKey, String> {
        let (key_type, decoding) = match material {
            KeyMaterial::Rsa { n, e } => {
                let key = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e))
                    .map_err(|err| format!("invalid RSA key: {err}"))?;
                check_rsa_size(&key)?;
                let decoding = DecodingKey::from_rsa_raw_components(&n, &e);
                (KeyType::Rsa, decoding)
            }
            KeyMaterial::Ec { p384, x, y } => {
                let (key_type, size) = if p384 {
                    (KeyType::EcP384, 48)
                } else {
                    (KeyType::EcP256, 32)
                };
                if x.len() != size || y.len() != size {
                    return Err(format!(
                        "invalid {} key: coordinates must be {size} bytes",
                        key_type.name()
                    ));
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let on_curve = if p384 {
                    p384::PublicKey::from_sec1_bytes(&point).is_ok()
                } else {
                    p256::PublicKey::from_sec1_bytes(&point).is_ok()
                };
                if !on_curve {
                    return Err(format!("invalid {} key: not on the curve", key_type.name()));
                }
                let decoding = DecodingKey::from_ec_components(
                    &URL_SAFE_NO_PAD.encode(&x),
                    &URL_SAFE_NO_PAD.encode(&y),
                )
                .map_err(|err| format!("invalid {} key: {err}", key_type.name()))?;
                (key_type, decoding)
            }
            KeyMaterial::Ed25519 { x } => {
                let bytes: [u8; 32] = x
                    .as_slice()
                    .try_into()
                    .map_err(|_| "invalid Ed25519 key: not 32 bytes".to_owned())?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| "invalid Ed25519 key".to_owned())?;
                if key.is_weak() {
                    return Err("invalid Ed25519 key: weak (small order) point".into());
                }
                let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(bytes))
                    .map_err(|err| format!("invalid Ed25519 key: {err}"))?;
                (KeyType::Ed25519, decoding)
            }
        };
        if let Some(alg) = pinned {
            if !key_type.algorithms().contains(&alg) {
                return Err(format!(
                    "alg {alg:?} does not fit a {} key",
                    key_type.name()
                ));
            }
        }
        Ok(VerifyKey {
            kid,
            key_type,
            pinned,
            decoding,
        })
    }
}

fn check_rsa_size(key: &RsaPublicKey) -> Result<(), String> {
    let bits = key.n().bits();
    if RSA_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "RSA key of {bits} bits (expected {} to {})",
            RSA_BITS.start(),
            RSA_BITS.end()
        ))
    }
}

/// Loads `JWT_PUBLIC_KEY_FILE`. Errors name the setting and the file.
pub(super) fn load_public_key_file(path: &Path) -> Result<VerifyKey, String> {
    let at = format!("JWT_PUBLIC_KEY_FILE={}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{at}: {e}"))?;
    let material = parse_public_pem(&text).map_err(|e| format!("{at}: {e}"))?;
    VerifyKey::public(material, None, None).map_err(|e| format!("{at}: {e}"))
}

/// A PEM public key: SPKI `PUBLIC KEY` (RSA, EC P-256/P-384, Ed25519), PKCS#1
/// `RSA PUBLIC KEY`, or the public key inside a `CERTIFICATE`.
pub(super) fn parse_public_pem(text: &str) -> Result<KeyMaterial, String> {
    if let Some(der) = pem_block(text, "PUBLIC KEY")? {
        return spki_material(&der);
    }
    if let Some(der) = pem_block(text, "RSA PUBLIC KEY")? {
        let key = RsaPublicKey::from_pkcs1_der(&der)
            .map_err(|e| format!("not a valid RSA PUBLIC KEY: {e}"))?;
        return Ok(rsa_material(&key));
    }
    if let Some(der) = pem_block(text, "CERTIFICATE")? {
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("not a valid CERTIFICATE: {e}"))?;
        return spki_material(cert.public_key().raw);
    }
    if text.contains("PRIVATE KEY-----") {
        return Err(
            "holds a private key; give the public key (openssl pkey -in key.pem -pubout)".into(),
        );
    }
    Err("not a PEM public key".into())
}

/// A DER `SubjectPublicKeyInfo`, of any supported key type.
fn spki_material(der: &[u8]) -> Result<KeyMaterial, String> {
    if let Ok(key) = RsaPublicKey::from_public_key_der(der) {
        return Ok(rsa_material(&key));
    }
    if let Ok(key) = p256::PublicKey::from_public_key_der(der) {
        let point = key.to_sec1_bytes();
        return ec_material(&point, false);
    }
    if let Ok(key) = p384::PublicKey::from_public_key_der(der) {
        let point = key.to_sec1_bytes();
        return ec_material(&point, true);
    }
    if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
        return Ok(KeyMaterial::Ed25519 {
            x: key.to_bytes().to_vec(),
        });
    }
    Err("not an RSA, EC P-256, EC P-384 or Ed25519 public key".into())
}

fn rsa_material(key: &RsaPublicKey) -> KeyMaterial {
    KeyMaterial::Rsa {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    }
}

/// Splits an uncompressed SEC1 point (`04 || x || y`) into its coordinates.
fn ec_material(point: &[u8], p384: bool) -> Result<KeyMaterial, String> {
    let size = if p384 { 48 } else { 32 };
    match point.split_first() {
        Some((0x04, xy)) if xy.len() == 2 * size => Ok(KeyMaterial::Ec {
            p384,
            x: xy[..size].to_vec(),
            y: xy[size..].to_vec(),
        }),
        _ => Err("unexpected EC point encoding".into()),
    }
}

/// The DER inside the first `-----BEGIN <label>-----` block, if there is one.
fn pem_block(text: &str, label: &str) -> Result<Option<Vec<u8>>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = text.find(&begin) else {
        return Ok(None);
    };
    let body = &text[start + begin.len()..];
    let Some(stop) = body.find(&end) else {
        return Err(format!("{label} block has no END line"));
    };
    let b64: String = body[..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map(Some)
        .map_err(|_| format!("{label} block is not valid base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_follow_the_key_type() {
        assert_eq!(KeyType::Hmac.algorithms(), &[Algorithm::HS256]);
        assert!(!KeyType::Rsa.algorithms().contains(&Algorithm::HS256));
        assert!(KeyType::Rsa.algorithms().contains(&Algorithm::PS512));
        assert_eq!(KeyType::EcP256.algorithms(), &[Algorithm::ES256]);
        assert_eq!(KeyType::EcP384.algorithms(), &[Algorithm::ES384]);
        assert_eq!(KeyType::Ed25519.algorithms(), &[Algorithm::EdDSA]);
        for t in [
            KeyType::Rsa,
            KeyType::EcP256,
            KeyType::EcP384,
            KeyType::Ed25519,
        ] {
            for alg in t.algorithms() {
                assert!(PUBLIC_KEY_ALGORITHMS.contains(alg));
            }
        }
    }

    #[test]
    fn pinned_alg_narrows_the_key() {
        let key = VerifyKey::public(
            KeyMaterial::Ed25519 {
                x: ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                    .verifying_key()
                    .to_bytes()
                    .to_vec(),
            },
            None,
            Some(Algorithm::EdDSA),
        )
        .expect("valid key");
        assert!(key.allows(Algorithm::EdDSA));
        assert!(!key.allows(Algorithm::HS256));
    }

    #[test]
    fn bad_material_is_refused() {
        let short = KeyMaterial::Ed25519 { x: vec![1; 31] };
        assert!(VerifyKey::public(short, None, None).is_err());
        let off_curve = KeyMaterial::Ec {
            p384: false,
            x: vec![1; 32],
            y: vec![2; 32],
        };
        assert!(VerifyKey::public(off_curve, None, None).is_err());
        let small_rsa = KeyMaterial::Rsa {
            n: vec![0xc5; 128],
            e: vec![1, 0, 1],
        };
        let err = VerifyKey::public(small_rsa, None, None)
            .err()
            .expect("1024-bit RSA refused");
        assert!(err.contains("1024 bits"), "{err}");
    }

    #[test]
    fn not_a_public_key() {
        assert_eq!(
            parse_public_pem("hello").err().as_deref(),
            Some("not a PEM public key")
        );
        let private =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        assert!(parse_public_pem(private)
            .err()
            .expect("refused")
            .contains("private key"));
        let truncated = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n";
        assert!(parse_public_pem(truncated).is_err());
    }
}
