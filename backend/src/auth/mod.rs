//! Who is calling: the backend checks the caller's token itself, with the gateway's settings
//! (`JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`, `JWKS_URL`, `JWT_ISSUER`, `JWT_AUDIENCE`), because
//! the gateway in front is not the only way a request could arrive: identity headers such as
//! `X-Corral-Org` are never believed on their own.
//!
//! The check itself is the shared `corral-auth` crate (the gateway's, so a fix lands once);
//! this module adds what only the backend needs: whether the caller administers their org.

use std::sync::Arc;

pub use corral_auth::AuthError;

use crate::config::AuthConfig;

/// The caller, as a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub org: String,
    pub roles: Vec<String>,
    /// One of the token's roles is among `auth.admin_roles`: sees and manages the whole org.
    pub admin: bool,
}

/// Verifies bearer tokens; built once at start, shared by every request.
pub struct Verifier {
    inner: Arc<corral_auth::Verifier>,
    admin_roles: Vec<String>,
}

impl Verifier {
    /// Loads the keys; errors name the setting at fault.
    pub fn new(config: &AuthConfig) -> Result<Verifier, String> {
        let settings = corral_auth::AuthSettings {
            hs256_secret: config.secret.clone(),
            public_key_file: config.public_key_file.clone(),
            jwks_url: config.jwks_url.clone(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
            org_claim: config.org_claim.clone(),
            user_claim: config.user_claim.clone(),
            role_claim: config.role_claim.clone(),
            ..corral_auth::AuthSettings::default()
        };
        let inner = corral_auth::Verifier::new(settings).map_err(|e| {
            format!(
                "{e}; the backend verifies every caller's token with the same keys as the gateway"
            )
        })?;
        Ok(Verifier {
            inner: Arc::new(inner),
            admin_roles: config.admin_roles.clone(),
        })
    }

    /// Starts the JWKS refresh timer (no-op without `JWKS_URL`).
    pub fn start_background_refresh(&self) {
        self.inner.start_background_refresh();
    }

    /// Checks an `Authorization` header value.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let id = self.inner.verify(authorization).await?;
        let admin = id.roles.iter().any(|r| self.admin_roles.contains(r));
        Ok(Identity {
            user: id.user,
            org: id.org,
            roles: id.roles,
            admin,
        })
    }
}

#[cfg(test)]
mod tests;
