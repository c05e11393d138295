//! Which models an org (or user) may use, from the policy's glob patterns: anything else is
//! 403 `model_not_allowed` before an instance is chosen.

use async_trait::async_trait;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::context::RequestCtx;
use crate::errors::GatewayError;

pub struct ModelAccess;

#[async_trait]
impl Plugin for ModelAccess {
    fn name(&self) -> &'static str {
        "model_access"
    }

    async fn on_request(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow> {
        let (Some(model), Some(rules)) = (ctx.model.clone(), ctx.allowed_models()) else {
            return Ok(Flow::Continue);
        };
        if rules.allows(&model.normalized) {
            return Ok(Flow::Continue);
        }
        let who = ctx.identity.as_ref().map_or_else(
            || "anonymous callers".to_string(),
            |id| format!("org \"{}\"", id.org),
        );
        Ok(Flow::Respond(GatewayError::new(
            403,
            "model_not_allowed",
            format!("model \"{}\" is not allowed for {who}", model.model),
        )))
    }
}
