//! Refuses the model-management paths (`/api/pull`, `/api/delete`, ...): a client of a shared
//! pool must not fill or empty the GPUs' disks. A later policy may allow them for admins.

use async_trait::async_trait;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::routes::OllamaEndpoint;

pub struct ModelGuard;

/// A caller whose token carries one of the org's `admin_roles` may manage models.
fn is_admin(ctx: &RequestCtx) -> bool {
    let (Some(id), Some(policy)) = (&ctx.identity, &ctx.policy) else {
        return false;
    };
    let admin_roles = &policy.org(&id.org).admin_roles;
    id.roles.iter().any(|r| admin_roles.contains(r))
}

#[async_trait]
impl Plugin for ModelGuard {
    fn name(&self) -> &'static str {
        "model_guard"
    }

    async fn on_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow> {
        if ctx.endpoint == Some(OllamaEndpoint::Management) && !is_admin(ctx) {
            let path = session.req_header().uri.path().to_string();
            return Ok(Flow::Respond(GatewayError::forbidden(format!(
                "{path} manages models on the pool: only an org admin role may use it"
            ))));
        }
        Ok(Flow::Continue)
    }
}
