//! Verification keys and the algorithms each key type allows: the rule against algorithm
//! confusion (RFC 8725 §3.1) lives here and nowhere else.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey};

const HMAC: &[Algorithm] = &[Algorithm::HS256];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED: &[Algorithm] = &[Algorithm::EdDSA];

/// What a JWKS may serve: every public-key algorithm.
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

/// One configured key, ready for every request.
pub(super) struct VerifyKey {
    pub algorithms: &'static [Algorithm],
    pub decoding: DecodingKey,
}

impl VerifyKey {
    /// `JWT_SECRET`: its UTF-8 bytes are the HS256 key, as the gateway uses them.
    pub(super) fn hmac(secret: &str) -> Result<VerifyKey, String> {
        if secret.is_empty() {
            return Err("JWT_SECRET: empty secret".into());
        }
        if secret.len() < 32 {
            tracing::warn!(
                bytes = secret.len(),
                "JWT_SECRET is shorter than 32 bytes; HS256 tokens signed with it can be forged by brute force"
            );
        }
        Ok(VerifyKey {
            algorithms: HMAC,
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        })
    }

    /// `JWT_PUBLIC_KEY_FILE`: a PEM public key; its type (RSA, EC, Ed25519) decides the
    /// algorithms, never the token.
    pub(super) fn from_pem_file(path: &Path) -> Result<VerifyKey, String> {
        let at = format!("JWT_PUBLIC_KEY_FILE={}", path.display());
        let pem = std::fs::read(path).map_err(|e| format!("{at}: {e}"))?;
        if String::from_utf8_lossy(&pem).contains("PRIVATE KEY-----") {
            return Err(format!(
                "{at}: holds a private key; give the public key (openssl pkey -in key.pem -pubout)"
            ));
        }
        let (algorithms, decoding) = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
            (RSA, k)
        } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
            (EC, k)
        } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
            (ED, k)
        } else {
            return Err(format!("{at}: not a PEM RSA, EC or Ed25519 public key"));
        };
        Ok(VerifyKey {
            algorithms,
            decoding,
        })
    }
}
