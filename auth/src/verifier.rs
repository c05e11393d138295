//! Checking one `Authorization` header: token → header → candidate keys → signature and
//! registered claims (jsonwebtoken) → identity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::claims::{self, ClaimNames};
use super::error::{self, from_jwt, Attempt, AuthError};
use super::jwks::{self, Jwks, Lookup};
use super::keys::{self, VerifyKey};
use super::token::{bearer_token, parse_header};
use super::{AuthSettings, Identity};

/// Verifies bearer JWTs against the configured keys. Built once, shared by every request.
pub struct Verifier {
    /// Keys from `JWT_SECRET` and `JWT_PUBLIC_KEY_FILE`.
    static_keys: Vec<VerifyKey>,
    jwks: Option<Arc<Jwks>>,
    /// One prepared validation per algorithm some key may accept; a token whose `alg` has no
    /// entry is refused before any key is tried.
    validations: HashMap<Algorithm, Validation>,
    claims: ClaimNames,
    refresh_started: AtomicBool,
}

impl Verifier {
    /// Loads keys (errors name the setting and file/URL at fault, e.g.
    /// `JWT_PUBLIC_KEY_FILE=/x.pem: not a PEM public key`). With a JWKS URL, needs no network
    /// here: the first fetch happens on demand or in [`Verifier::start_background_refresh`].
    pub fn new(settings: AuthSettings) -> Result<Verifier, String> {
        let mut static_keys = Vec::new();
        if let Some(secret) = &settings.hs256_secret {
            static_keys.push(VerifyKey::hmac(secret)?);
        }
        if let Some(path) = &settings.public_key_file {
            static_keys.push(keys::load_public_key_file(path)?);
        }
        let jwks = match &settings.jwks_url {
            Some(url) => Some(Arc::new(Jwks::new(
                url,
                settings.jwks_refresh,
                settings.jwks_min_refetch,
            )?)),
            None => None,
        };
        if static_keys.is_empty() && jwks.is_none() {
            return Err(
                "JWT: no key configured (set JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWKS_URL)".into(),
            );
        }

        let mut algorithms: Vec<Algorithm> = static_keys
            .iter()
            .flat_map(|k| k.key_type.algorithms().iter().copied())
            .collect();
        if jwks.is_some() {
            algorithms.extend_from_slice(keys::PUBLIC_KEY_ALGORITHMS);
        }
        let validations = algorithms
            .into_iter()
            .map(|alg| (alg, validation(alg, &settings)))
            .collect();

        Ok(Verifier {
            static_keys,
            jwks,
            validations,
            claims: ClaimNames {
                org: settings.org_claim,
                user: settings.user_claim,
                role: settings.role_claim,
            },
            refresh_started: AtomicBool::new(false),
        })
    }

    /// Starts the timer refresh of the JWKS on the current tokio runtime (no-op without a
    /// JWKS URL, or when already started). The task ends when the verifier is dropped.
    pub fn start_background_refresh(self: &Arc<Self>) {
        let Some(jwks) = &self.jwks else {
            return;
        };
        if self.refresh_started.swap(true, Ordering::AcqRel) {
            return;
        }
        jwks::spawn_refresh(Arc::downgrade(jwks));
    }

    /// Checks an `Authorization` header value (`Bearer <jwt>`; scheme case-insensitive).
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let token = bearer_token(authorization)?;
        let header = parse_header(token)?;
        let alg = header.alg;
        let Some(validation) = self.validations.get(&alg) else {
            // No configured key type uses this algorithm: `none`-like tricks and HS256 against
            // an RSA/EC key (algorithm confusion) end here.
            return Err(AuthError::invalid(error::ALGORITHM));
        };

        let mut tried = false;
        for key in self.static_keys.iter().filter(|k| k.allows(alg)) {
            tried = true;
            if let Some(done) = self.try_key(token, key, validation) {
                return done;
            }
        }

        if let Some(jwks) = self.jwks.as_ref().filter(|_| alg != Algorithm::HS256) {
            let kid = header.kid.as_deref();
            let mut set = jwks.snapshot();
            if matches!(set.lookup(kid, alg), Lookup::Unknown) {
                jwks.refetch_for_unknown_key(&set).await;
                set = jwks.snapshot();
            }
            match set.lookup(kid, alg) {
                Lookup::Keys(keys) => {
                    for key in keys {
                        if let Some(done) = self.try_key(token, key, validation) {
                            return done;
                        }
                    }
                }
                Lookup::WrongAlgorithm if !tried => {
                    return Err(AuthError::invalid(error::ALGORITHM))
                }
                Lookup::Unknown if kid.is_some() || !tried => {
                    return Err(AuthError::invalid(error::UNKNOWN_KID))
                }
                Lookup::WrongAlgorithm | Lookup::Unknown => {}
            }
        }
        Err(AuthError::invalid(error::BAD_SIGNATURE))
    }

    /// `None` when the signature does not fit this key (try the next); otherwise the verdict.
    fn try_key(
        &self,
        token: &str,
        key: &VerifyKey,
        validation: &Validation,
    ) -> Option<Result<Identity, AuthError>> {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation) {
            Ok(data) => Some(claims::identity(&data.claims, &self.claims)),
            Err(e) => match from_jwt(&e) {
                Attempt::WrongKey => None,
                Attempt::Refused(refused) => Some(Err(refused)),
            },
        }
    }

    /// The JWKS cache, for tests that count fetches.
    #[cfg(test)]
    pub(super) fn jwks(&self) -> Option<&Jwks> {
        self.jwks.as_deref()
    }
}

/// The registered-claim rules for tokens signed with `alg`: `exp` required, `nbf` honoured,
/// both with the leeway; `iss` and `aud` required and checked when configured (and `aud`
/// ignored when not, as many providers always set it).
fn validation(alg: Algorithm, settings: &AuthSettings) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = settings.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &settings.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &settings.audience {
        Some(audience) => {
            v.set_audience(&[audience]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}
