//! Who is calling: the backend checks the caller's credentials itself, with the gateway's
//! settings (`JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`, `JWKS_URL`, `JWT_ISSUER`, `JWT_AUDIENCE`,
//! `API_KEY_PEPPER`), because the gateway in front is not the only way a request could
//! arrive: identity headers such as `X-Corral-Org` are never believed on their own.
//!
//! The checks themselves are the shared `corral-auth` crate (the gateway's, so a fix lands
//! once); this module adds what only the backend needs: whether the caller administers their
//! org, and whether it is an operator (administers every org's keys, usage and audit log).
//! API keys are resolved against the database in `api::extract`.

use std::sync::Arc;

use corral_auth::api_key::Pepper;
pub use corral_auth::AuthError;

use crate::config::AuthConfig;

/// The caller, as a verified token or API key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub org: String,
    pub roles: Vec<String>,
    /// One of the caller's roles is among `auth.admin_roles`: sees and manages the whole org.
    pub admin: bool,
    /// One of the caller's roles is among `auth.operator_roles`: reads the usage and audit log
    /// of any org and manages any org's API keys (never its conversations).
    pub operator: bool,
    /// The API key the caller used, if any (JWT callers have none).
    pub key_id: Option<String>,
}

/// Verifies bearer tokens; built once at start, shared by every request.
pub struct Verifier {
    jwt: Option<Arc<corral_auth::Verifier>>,
    pepper: Option<Pepper>,
    admin_roles: Vec<String>,
    operator_roles: Vec<String>,
}

impl Verifier {
    /// Loads the keys; errors name the setting at fault.
    pub fn new(config: &AuthConfig) -> Result<Verifier, String> {
        let has_jwt = config.jwt.has_key_source();
        if !has_jwt && config.api_key_pepper.is_none() {
            return Err(
                "JWT: no key configured: set JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWKS_URL \
                 (the same as the gateway's), or API_KEY_PEPPER for API keys; the backend \
                 verifies every caller itself"
                    .into(),
            );
        }
        let jwt = match has_jwt {
            true => Some(Arc::new(corral_auth::Verifier::new(config.jwt.clone())?)),
            false => None,
        };
        Ok(Verifier {
            jwt,
            pepper: config.api_key_pepper.clone(),
            admin_roles: config.admin_roles.clone(),
            operator_roles: config.operator_roles.clone(),
        })
    }

    /// Starts the JWKS refresh timer (no-op without `JWKS_URL`).
    pub fn start_background_refresh(&self) {
        if let Some(jwt) = &self.jwt {
            jwt.start_background_refresh();
        }
    }

    /// The pepper API keys are checked with; `None` when keys are off.
    pub fn pepper(&self) -> Option<&Pepper> {
        self.pepper.as_ref()
    }

    /// Whether these roles make their holder an admin of their org.
    pub fn is_admin(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.admin_roles.contains(r))
    }

    /// Whether these roles make their holder an operator.
    pub fn is_operator(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.is_operator_role(r))
    }

    /// Whether `role` is one of `auth.operator_roles`: a key may be given it by an operator
    /// only.
    pub fn is_operator_role(&self, role: &str) -> bool {
        self.operator_roles.iter().any(|r| r == role)
    }

    /// Checks an `Authorization: Bearer <jwt>` header value.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let Some(jwt) = &self.jwt else {
            return Err(match authorization {
                None => AuthError::missing("missing bearer token"),
                Some(_) => AuthError::invalid("JWTs are not accepted here: use an API key"),
            });
        };
        let id = jwt.verify(authorization).await?;
        Ok(Identity {
            admin: self.is_admin(&id.roles),
            operator: self.is_operator(&id.roles),
            user: id.user,
            org: id.org,
            roles: id.roles,
            key_id: None,
        })
    }
}

#[cfg(test)]
mod tests;
