//! Keeps the client's `X-Request-Id` (when sane) in place of the one the proxy made, so a
//! request can be followed through logs, the upstream and the response.

use async_trait::async_trait;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::context::RequestCtx;

pub struct RequestId;

/// Longer or stranger ids are replaced: they end up in logs and headers.
const MAX_LEN: usize = 128;

pub fn accept(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

#[async_trait]
impl Plugin for RequestId {
    fn name(&self) -> &'static str {
        "request_id"
    }

    async fn on_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow> {
        // The proxy gave every request a fresh id already; a sane client id replaces it.
        let given = session
            .req_header()
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| accept(v));
        if let Some(id) = given {
            ctx.request_id = id.to_string();
        }
        Ok(Flow::Continue)
    }

    fn on_response(&self, header: &mut ResponseHeader, ctx: &RequestCtx) {
        let _ = header.insert_header("X-Request-Id", ctx.request_id.as_str());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn accepts_only_sane_ids() {
        assert!(super::accept("abc-123"));
        assert!(!super::accept(""));
        assert!(!super::accept("a b"));
        assert!(!super::accept(&"x".repeat(200)));
    }
}
