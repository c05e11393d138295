//! JWT verification: the backend checks the caller's token itself, with the gateway's
//! settings (`JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`, `JWKS_URL`, `JWT_ISSUER`, `JWT_AUDIENCE`),
//! because the gateway in front is not the only way a request could arrive: identity headers
//! such as `X-Corral-Org` are never believed on their own.
//!
//! A key's type fixes the algorithms it verifies (HS256 for the secret; RS*/PS* for RSA,
//! ES256/ES384 for EC, EdDSA for Ed25519), so a token's `alg` can never pick a weaker check
//! (`none`, or HS256 keyed with an RSA public key).
//!
//! - `keys.rs`: loading keys and the algorithms each allows.
//! - `jwks.rs`: the identity provider's key set, fetched and refreshed.
//! - `claims.rs`: the identity from verified claims.

mod claims;
mod jwks;
mod keys;

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::config::AuthConfig;
use claims::ClaimNames;
use keys::VerifyKey;

/// The caller, as a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub org: String,
    pub roles: Vec<String>,
    /// One of the token's roles is among `auth.admin_roles`: sees and manages the whole org.
    pub admin: bool,
}

/// Why a token was refused; `description` is safe to show (no token, no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// No bearer token at all (RFC 6750: a bare challenge, no error code).
    pub missing: bool,
    pub description: String,
}

impl AuthError {
    fn missing() -> Self {
        Self {
            missing: true,
            description: "missing bearer token".into(),
        }
    }

    fn invalid(description: impl Into<String>) -> Self {
        Self {
            missing: false,
            description: description.into(),
        }
    }

    /// The `WWW-Authenticate` value, as the gateway sends it.
    pub fn www_authenticate(&self) -> String {
        if self.missing {
            return "Bearer realm=\"corral\"".into();
        }
        let safe: String = self
            .description
            .chars()
            .map(|c| match c {
                '"' | '\\' => '?',
                ' '..='~' => c,
                _ => '?',
            })
            .collect();
        format!("Bearer realm=\"corral\", error=\"invalid_token\", error_description=\"{safe}\"")
    }
}

/// Verifies bearer tokens; built once at start, shared by every request.
pub struct Verifier {
    static_keys: Vec<VerifyKey>,
    jwks: Option<Arc<jwks::Jwks>>,
    validations: HashMap<Algorithm, Validation>,
    names: ClaimNames,
    admin_roles: Vec<String>,
}

impl Verifier {
    /// Loads the keys; errors name the setting at fault.
    pub fn new(config: &AuthConfig) -> Result<Verifier, String> {
        let mut static_keys = Vec::new();
        if let Some(secret) = &config.secret {
            static_keys.push(VerifyKey::hmac(secret)?);
        }
        if let Some(path) = &config.public_key_file {
            static_keys.push(VerifyKey::from_pem_file(path)?);
        }
        let jwks = config
            .jwks_url
            .as_ref()
            .map(|url| jwks::Jwks::new(url).map(Arc::new))
            .transpose()?;
        if static_keys.is_empty() && jwks.is_none() {
            return Err(
                "JWT: no key configured: set JWT_SECRET, JWT_PUBLIC_KEY_FILE or \
                        JWKS_URL (the same as the gateway's); the backend verifies every \
                        caller's token"
                    .into(),
            );
        }
        let mut algorithms: Vec<Algorithm> = static_keys
            .iter()
            .flat_map(|k| k.algorithms.iter().copied())
            .collect();
        if jwks.is_some() {
            algorithms.extend_from_slice(keys::PUBLIC_KEY_ALGORITHMS);
        }
        let validations = algorithms
            .into_iter()
            .map(|alg| (alg, validation(alg, config)))
            .collect();
        Ok(Verifier {
            static_keys,
            jwks,
            validations,
            names: ClaimNames {
                org: config.org_claim.clone(),
                user: config.user_claim.clone(),
                role: config.role_claim.clone(),
            },
            admin_roles: config.admin_roles.clone(),
        })
    }

    /// Starts the JWKS refresh timer (no-op without `JWKS_URL`).
    pub fn start_background_refresh(&self) {
        if let Some(jwks) = &self.jwks {
            jwks::spawn_refresh(Arc::downgrade(jwks));
        }
    }

    /// Checks an `Authorization` header value.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let token = bearer_token(authorization)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::invalid("malformed token"))?;
        let alg = header.alg;
        let Some(validation) = self.validations.get(&alg) else {
            return Err(AuthError::invalid("algorithm not allowed"));
        };
        for key in self
            .static_keys
            .iter()
            .filter(|k| k.algorithms.contains(&alg))
        {
            if let Some(verdict) = self.try_key(token, &key.decoding, validation) {
                return verdict;
            }
        }
        if let Some(jwks) = self.jwks.as_ref().filter(|_| alg != Algorithm::HS256) {
            for key in jwks.keys_for(header.kid.as_deref(), alg).await {
                if let Some(verdict) = self.try_key(token, &key, validation) {
                    return verdict;
                }
            }
        }
        Err(AuthError::invalid("bad signature"))
    }

    /// `None` when the signature does not fit this key (try the next); else the verdict.
    fn try_key(
        &self,
        token: &str,
        key: &jsonwebtoken::DecodingKey,
        validation: &Validation,
    ) -> Option<Result<Identity, AuthError>> {
        use jsonwebtoken::errors::ErrorKind as K;
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
            Ok(data) => Some(claims::identity(&data.claims, &self.names).map(|mut id| {
                id.admin = id.roles.iter().any(|r| self.admin_roles.contains(r));
                id
            })),
            Err(e) => {
                let description = match e.kind() {
                    K::InvalidSignature
                    | K::InvalidEcdsaKey
                    | K::InvalidEddsaKey
                    | K::InvalidRsaKey(_)
                    | K::InvalidKeyFormat => return None,
                    K::ExpiredSignature => "token expired".to_owned(),
                    K::ImmatureSignature => "token not yet valid".to_owned(),
                    K::InvalidIssuer => "wrong issuer".to_owned(),
                    K::InvalidAudience => "wrong audience".to_owned(),
                    K::MissingRequiredClaim(c) => format!("token has no {c} claim"),
                    K::InvalidAlgorithm => "algorithm not allowed".to_owned(),
                    _ => "malformed token".to_owned(),
                };
                Some(Err(AuthError::invalid(description)))
            }
        }
    }
}

/// `exp` required, `nbf` honoured, `iss`/`aud` required when configured (and `aud` ignored
/// when not, as many providers always set it) — the gateway's rules.
fn validation(alg: Algorithm, config: &AuthConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = config.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.audience {
        Some(audience) => {
            v.set_audience(&[audience]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.map(str::trim).unwrap_or("");
    if value.len() > 8 * 1024 {
        return Err(AuthError::invalid("token too large"));
    }
    let Some((scheme, token)) = value.split_once([' ', '\t']) else {
        return Err(AuthError::missing());
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::missing());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::missing());
    }
    Ok(token)
}

#[cfg(test)]
mod tests;
