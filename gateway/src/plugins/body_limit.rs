//! Refuses a body larger than the limit from its `Content-Length`, before reading a byte of it.
//! Bodies without a length (chunked) are counted as they stream (see the proxy's body filter).

use async_trait::async_trait;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::context::RequestCtx;
use crate::errors::GatewayError;

pub struct BodyLimit {
    pub max: usize,
}

#[async_trait]
impl Plugin for BodyLimit {
    fn name(&self) -> &'static str {
        "body_limit"
    }

    async fn on_request(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow> {
        let length = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match length {
            Some(n) if n > self.max as u64 => {
                Ok(Flow::Respond(GatewayError::payload_too_large(self.max)))
            }
            _ => Ok(Flow::Continue),
        }
    }
}
