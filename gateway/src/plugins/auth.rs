//! Authentication as a plugin: no request reaches a GPU or the backend without a valid JWT or
//! API key, except on the paths the operator made public. The verified identity goes into
//! the context (and upstream as `X-Corral-Org` / `X-Corral-User`).
//!
//! A bearer value starting with `crl_` is an API key (so is `x-api-key`, which
//! Anthropic-style clients send); anything else is a JWT.

use std::sync::Arc;

use async_trait::async_trait;
use corral_auth::api_key;
use corral_auth::key_store::KeyIdentity;
use corral_auth::{AuthError, Verifier};
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::config::AuthConfig;
use crate::context::{Identity, KeyRef, RequestCtx};
use crate::errors::GatewayError;
use crate::keys::{KeyFailure, KeyStore};
use crate::policy::ModelRules;

pub struct Auth {
    /// `None` when no JWT key source is configured (API keys only).
    pub verifier: Option<Arc<Verifier>>,
    /// `None` when `API_KEY_PEPPER` is not set.
    pub keys: Option<Arc<KeyStore>>,
    pub public_paths: Vec<String>,
}

impl Auth {
    /// Builds the verifier from the config; key files are read here, so a bad key stops the
    /// gateway at start with the file named.
    pub fn new(config: &AuthConfig, keys: Option<Arc<KeyStore>>) -> Result<Auth, String> {
        let verifier = match config.jwt.has_key_source() {
            true => Some(Arc::new(Verifier::new(config.jwt.clone())?)),
            false => None,
        };
        Ok(Auth {
            verifier,
            keys,
            public_paths: config.public_paths.clone(),
        })
    }

    async fn with_key(&self, key: &str, ctx: &RequestCtx) -> Result<Identity, GatewayError> {
        let Some(keys) = &self.keys else {
            return Err(unauthorized(AuthError::invalid(
                "API keys are not enabled on this gateway",
            )));
        };
        match keys.resolve(key, ctx.client_ip).await {
            Ok((id, models)) => Ok(identity_of(id, models)),
            Err(KeyFailure::Refused(reason)) => Err(unauthorized(AuthError::invalid(reason))),
            Err(KeyFailure::Blocked) => {
                let mut e = GatewayError::new(
                    429,
                    "rate_limited",
                    "too many failed API key checks from this address; try again in a minute",
                );
                e.retry_after = Some(60);
                Err(e)
            }
            Err(KeyFailure::Unavailable) => {
                let mut e = GatewayError::new(
                    503,
                    "auth_unavailable",
                    "API keys cannot be checked right now (the database is unavailable)",
                );
                e.retry_after = Some(2);
                Err(e)
            }
        }
    }

    async fn with_jwt(&self, header: Option<&str>) -> Result<Identity, GatewayError> {
        let Some(verifier) = &self.verifier else {
            return Err(unauthorized(match header {
                None => AuthError::missing("missing bearer token"),
                Some(_) => AuthError::invalid("JWTs are not accepted here: use an API key"),
            }));
        };
        let id = verifier.verify(header).await.map_err(unauthorized)?;
        Ok(Identity {
            user: id.user,
            org: id.org,
            roles: id.roles,
            key: None,
        })
    }
}

impl Auth {
    /// The caller of `session`, from its bearer token or API key (public paths aside).
    pub async fn identify(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> Result<Identity, GatewayError> {
        let req = session.req_header();
        let header = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("Bearer \u{fffd}"));
        let x_api_key = req
            .headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        match api_key::presented(header, x_api_key) {
            Some(key) => self.with_key(key, ctx).await,
            None => self.with_jwt(header).await,
        }
    }
}

fn unauthorized(e: AuthError) -> GatewayError {
    GatewayError::unauthorized(
        format!("unauthorized: {}", e.description),
        e.www_authenticate(),
    )
}

fn identity_of(id: KeyIdentity, models: Option<ModelRules>) -> Identity {
    Identity {
        user: id.user,
        org: id.org,
        roles: id.roles,
        key: Some(KeyRef {
            id: id.key_id,
            name: id.key_name,
            models,
        }),
    }
}

#[async_trait]
impl Plugin for Auth {
    fn name(&self) -> &'static str {
        "auth"
    }

    async fn on_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow> {
        let req = session.req_header();
        let path = req.uri.path();
        if self
            .public_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            return Ok(Flow::Continue);
        }
        let result = self.identify(session, ctx).await;
        match result {
            Ok(identity) => {
                ctx.identity = Some(identity);
                Ok(Flow::Continue)
            }
            Err(e) => Ok(Flow::Respond(e)),
        }
    }
}
