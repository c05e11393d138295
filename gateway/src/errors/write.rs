//! Writing gateway-made responses to the client.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{ErrorShape, GatewayError};

/// Headers for a gateway-made response with a body of `len` bytes.
pub fn header(
    status: u16,
    content_type: &str,
    len: usize,
    extra: &[(&'static str, String)],
) -> pingora_error::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(4 + extra.len()))?;
    header.insert_header("Content-Type", content_type)?;
    header.insert_header("Content-Length", len.to_string())?;
    header.insert_header("Cache-Control", "no-store")?;
    for (name, value) in extra {
        header.insert_header(*name, value.as_str())?;
    }
    Ok(header)
}

/// Sends a header and body (no body for `HEAD`).
pub async fn send(
    session: &mut Session,
    header: ResponseHeader,
    body: Bytes,
) -> pingora_error::Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Answers with a JSON body. `extra` headers are added as given.
pub async fn write_json(
    session: &mut Session,
    status: u16,
    body: &serde_json::Value,
    extra: &[(&'static str, String)],
) -> pingora_error::Result<()> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    write_bytes(
        session,
        status,
        "application/json; charset=utf-8",
        bytes,
        extra,
    )
    .await
}

/// Answers with a body of the given content type.
pub async fn write_bytes(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> pingora_error::Result<()> {
    let h = header(status, content_type, body.len(), extra)?;
    send(session, h, body).await
}

/// The header and body of a [`GatewayError`] in the shape the path's clients expect.
pub fn error_response(
    path: &str,
    err: &GatewayError,
    request_id: &str,
) -> pingora_error::Result<(ResponseHeader, Bytes)> {
    let shape = ErrorShape::for_path(path);
    let body = Bytes::from(serde_json::to_vec(&err.body(shape)).unwrap_or_default());
    let mut extra = vec![("X-Request-Id", request_id.to_string())];
    if let Some(secs) = err.retry_after {
        extra.push(("Retry-After", secs.to_string()));
    }
    extra.extend(err.headers.iter().cloned());
    let h = header(
        err.status,
        "application/json; charset=utf-8",
        body.len(),
        &extra,
    )?;
    Ok((h, body))
}
