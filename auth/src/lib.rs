//! Who is calling, shared by the gateway and the backend so that a fix lands once: JWT
//! verification from `Authorization: Bearer <jwt>`, and the API-key format and hashing.
//!
//! Keys come from a shared secret (HS256), a PEM public key file (RSA, EC P-256/P-384,
//! Ed25519) and/or a JWKS URL. Each key's type fixes the algorithms it verifies, so the token
//! cannot choose a weaker one (`none`, or HS256 keyed with an RSA public key). `exp` is
//! required, `nbf` honoured, `iss`/`aud` checked when configured; the identity (user, org,
//! roles) comes from configurable claims.
//!
//! - `keys.rs`: key types, their algorithms, PEM loading.
//! - `jwk.rs` / `jwks.rs`: JWK parsing; the JWKS cache with its refresh rules.
//! - `token.rs`: the bearer token and its JOSE header, before any crypto.
//! - `claims.rs`: the identity from verified claims.
//! - `verifier.rs`: the whole check, request by request.
//! - `error.rs`: the reason a client is told, and the `WWW-Authenticate` challenge.
//! - `api_key.rs`: `crl_<id>_<secret>` keys: generation, parsing, peppered hashes.
//! - `key_store.rs`: a key as the database holds it, and the check of a presented secret.

pub mod api_key;
mod claims;
mod error;
mod jwk;
mod jwks;
pub mod key_store;
mod keys;
mod token;
mod verifier;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

// Part of the API (what `verify` returns) even where callers never name the types.
#[allow(unused_imports)]
pub use error::{AuthError, AuthErrorKind};
pub use verifier::Verifier;

/// Where keys come from and what a token must say; built from the config / environment.
/// `Debug` shows everything but the secret.
#[derive(Clone)]
pub struct AuthSettings {
    /// `JWT_SECRET`: HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// `JWT_PUBLIC_KEY_FILE`: PEM public key (SPKI `PUBLIC KEY` for RSA, EC P-256/P-384 or
    /// Ed25519; PKCS#1 `RSA PUBLIC KEY`; or a `CERTIFICATE`, whose key is used).
    pub public_key_file: Option<PathBuf>,
    /// `JWKS_URL`: the identity provider's key set.
    pub jwks_url: Option<String>,
    /// `JWT_ISSUER`: required `iss` when set.
    pub issuer: Option<String>,
    /// `JWT_AUDIENCE`: required member of `aud` (string or array) when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (whole seconds).
    pub leeway: Duration,
    /// Claim holding the organisation id (required).
    pub org_claim: String,
    /// Claim holding the user id (required).
    pub user_claim: String,
    /// Claim holding the role (a string, or an array of strings); `None` reads no roles.
    pub role_claim: Option<String>,
    /// How often the JWKS is refetched on a timer.
    pub jwks_refresh: Duration,
    /// At most one refetch per this period when tokens name an unknown `kid`.
    pub jwks_min_refetch: Duration,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("public_key_file", &self.public_key_file)
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("org_claim", &self.org_claim)
            .field("user_claim", &self.user_claim)
            .field("role_claim", &self.role_claim)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("jwks_min_refetch", &self.jwks_min_refetch)
            .finish()
    }
}

impl AuthSettings {
    /// Whether any JWT key source is configured (JWTs are checked at all).
    pub fn has_key_source(&self) -> bool {
        self.hs256_secret.is_some() || self.public_key_file.is_some() || self.jwks_url.is_some()
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            public_key_file: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            org_claim: "org".into(),
            user_claim: "sub".into(),
            role_claim: Some("role".into()),
            jwks_refresh: Duration::from_secs(300),
            jwks_min_refetch: Duration::from_secs(10),
        }
    }
}

/// The caller, as a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub org: String,
    pub roles: Vec<String>,
    /// The token's `exp` (seconds since the Unix epoch).
    pub expires_at: u64,
}
