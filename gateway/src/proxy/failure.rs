//! Turning a failed proxy attempt into what the client sees, in one place.
//!
//! Before the response started: a JSON error with the right status. After it started (a
//! stream cut by a dying instance): a last line saying so, in the stream's own format, then a
//! clean end, so clients stop waiting instead of hanging on a half-open stream.

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_proxy::{FailToProxy, Session};
use serde_json::json;

use super::local;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::usage::UsageParser;

pub async fn answer(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let code = if ctx.response_started {
        end_stream(session, e, ctx).await
    } else {
        match classify(e, ctx) {
            Some(err) => {
                let status = err.status;
                // Pingora closes the connection after a failed proxy attempt: say so, or a
                // client reusing it would see its next request cut.
                session.set_keepalive(None);
                if let Err(we) = local::respond_error(session, ctx, &err).await {
                    tracing::debug!(error = %we, "could not send the error response");
                }
                status
            }
            None => 0,
        }
    };
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// The error to answer, or `None` when the client is gone.
fn classify(e: &Error, ctx: &mut RequestCtx) -> Option<GatewayError> {
    if let Some(err) = ctx.pending_error.clone() {
        return Some(err);
    }
    match (e.esource(), e.etype()) {
        (_, ErrorType::HTTPStatus(code)) => Some(GatewayError::new(
            *code,
            "bad_request",
            format!("request failed with status {code}"),
        )),
        (ErrorSource::Downstream, ErrorType::ReadTimedout) => Some(GatewayError::new(
            408,
            "bad_request",
            "timed out reading the request",
        )),
        (
            ErrorSource::Downstream,
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
        ) => None,
        (ErrorSource::Downstream, _) => Some(GatewayError::bad_request(format!(
            "malformed request: {}",
            e.etype().as_str()
        ))),
        (
            ErrorSource::Upstream,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
        ) => Some(GatewayError::new(
            504,
            "upstream_unavailable",
            "the Ollama instance did not answer in time",
        )),
        (ErrorSource::Upstream, _)
        | (_, ErrorType::ConnectError | ErrorType::ConnectRefused | ErrorType::ConnectTimedout) => {
            Some(GatewayError::bad_gateway(format!(
                "the upstream failed: {}",
                e.etype().as_str()
            )))
        }
        _ => Some(GatewayError::new(
            500,
            "internal_error",
            "internal gateway error",
        )),
    }
}

/// Ends a stream that lost its upstream with a final error line the client can read.
async fn end_stream(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> u16 {
    if e.esource() == &ErrorSource::Downstream {
        return 0; // the client went away: nothing to tell it
    }
    end_interrupted_stream(session, ctx).await;
    ctx.upstream_status.unwrap_or(502)
}

/// Writes the stream's last line (an error in the stream's own format) and ends the body.
pub async fn end_interrupted_stream(session: &mut Session, ctx: &mut RequestCtx) {
    let message = "the Ollama instance failed while streaming the response";
    // The held-back tail of a cut line is dropped; a line passed on unfinished is ended
    // first, so the error is a line (or event) of its own.
    let start = ctx.frames.as_ref().map_or(&b""[..], |g| g.terminator());
    let start = String::from_utf8_lossy(start);
    let line = match &ctx.usage {
        Some(UsageParser::Ndjson(_)) => Some(format!(
            "{start}{}\n",
            json!({ "error": message, "code": "upstream_unavailable" })
        )),
        Some(UsageParser::Sse(_)) => Some(format!(
            "{start}data: {}\n\n",
            json!({ "error": { "message": message, "type": "api_error", "code": "upstream_unavailable" } })
        )),
        _ => None,
    };
    if let Some(line) = line {
        if let Err(we) = session
            .write_response_body(Some(Bytes::from(line)), true)
            .await
        {
            tracing::debug!(error = %we, "could not end the interrupted stream");
        }
    }
}
