//! JWT authentication as a plugin: no request reaches a GPU or the backend without a valid
//! token, except on the paths the operator made public. The verified identity goes into the
//! context (and upstream as `X-Corral-Org` / `X-Corral-User`).

use std::sync::Arc;

use async_trait::async_trait;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::config::AuthConfig;
use crate::context::{Identity, RequestCtx};
use crate::errors::GatewayError;
use corral_auth::{AuthSettings, Verifier};

pub struct Auth {
    pub verifier: Arc<Verifier>,
    pub public_paths: Vec<String>,
}

impl Auth {
    /// Builds the verifier from the config; key files are read here, so a bad key stops the
    /// gateway at start with the file named.
    pub fn new(config: &AuthConfig) -> Result<Auth, String> {
        let settings = AuthSettings {
            hs256_secret: config.secret.clone(),
            public_key_file: config.public_key_file.clone(),
            jwks_url: config.jwks_url.clone(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
            org_claim: config.org_claim.clone(),
            user_claim: config.user_claim.clone(),
            role_claim: config.role_claim.clone(),
            jwks_refresh: config.jwks_refresh,
            jwks_min_refetch: config.jwks_min_refetch,
        };
        Ok(Auth {
            verifier: Arc::new(Verifier::new(settings)?),
            public_paths: config.public_paths.clone(),
        })
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
        let path = session.req_header().uri.path();
        if self
            .public_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            return Ok(Flow::Continue);
        }
        let header = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("Bearer \u{fffd}"));
        match self.verifier.verify(header).await {
            Ok(id) => {
                ctx.identity = Some(Identity {
                    user: id.user,
                    org: id.org,
                    roles: id.roles,
                });
                Ok(Flow::Continue)
            }
            Err(e) => Ok(Flow::Respond(GatewayError::unauthorized(
                format!("unauthorized: {}", e.description),
                e.www_authenticate(),
            ))),
        }
    }
}
