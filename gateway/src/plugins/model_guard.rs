//! Refuses the model-management paths (`/api/pull`, `/api/delete`, ...): a client of a shared
//! pool must not fill or empty the GPUs' disks. A later policy may allow them for admins.

use async_trait::async_trait;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::routes::OllamaEndpoint;

pub struct ModelGuard;

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
        if ctx.endpoint == Some(OllamaEndpoint::Management) {
            let path = session.req_header().uri.path().to_string();
            return Ok(Flow::Respond(GatewayError::forbidden(format!(
                "{path} manages models on the pool and is not allowed through this gateway"
            ))));
        }
        Ok(Flow::Continue)
    }
}
