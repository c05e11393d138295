//! What the edge decides before routing: which client this is (trusted proxies), whether it
//! came over TLS, redirecting plain HTTP to HTTPS, HSTS, and the forwarding headers upstream.

use std::net::IpAddr;

use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::config::Cidr;
use crate::context::RequestCtx;
use crate::errors::{response_header, send, GatewayError};
use crate::state::AppState;

/// Notes TLS and the client address in the context.
pub fn observe(session: &Session, ctx: &mut RequestCtx, state: &AppState) {
    ctx.tls = session
        .as_downstream()
        .digest()
        .is_some_and(|d| d.ssl_digest.is_some());
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    ctx.peer_ip = peer;
    let forwarded = session
        .req_header()
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    ctx.client_ip = peer.map(|p| client_ip(p, forwarded, &state.config.trusted_proxies));
}

/// The client's address: the peer, unless the peer is a trusted proxy; then the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let chain = forwarded.unwrap_or("").split(',').rev();
    for hop in chain.map(str::trim).filter(|h| !h.is_empty()) {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer, // a garbled chain is not believed
        }
    }
    peer
}

/// Refuses a request header block over `server.max_header_bytes` (431) and conflicting
/// `Content-Length` headers (400); identical repeated ones are collapsed into one, so the
/// upstream never sees a length it could read differently from the gateway.
pub fn check_header(session: &mut Session, max_bytes: usize) -> Option<GatewayError> {
    let req = session.req_header();
    let size = header_block_size(req);
    if size > max_bytes {
        return Some(GatewayError::new(
            431,
            "request_header_too_large",
            format!(
                "the request header block is {size} bytes, larger than the limit of {max_bytes}"
            ),
        ));
    }
    // Nearly every request has at most one: look no further then, and allocate nothing.
    let mut lengths = req
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes().trim_ascii());
    let (Some(first), Some(second)) = (lengths.next(), lengths.next()) else {
        return None;
    };
    if second != first || lengths.any(|v| v != first) {
        return Some(GatewayError::bad_request(
            "conflicting Content-Length headers",
        ));
    }
    let one = String::from_utf8_lossy(first).into_owned();
    if let Err(e) = session
        .req_header_mut()
        .insert_header(http::header::CONTENT_LENGTH, one)
    {
        tracing::debug!(error = %e, "could not collapse Content-Length");
    }
    None
}

/// Bytes of the request line and headers as sent (names, values, separators).
fn header_block_size(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    req.headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

/// Answers plain-HTTP requests with 308 to HTTPS when configured (not `/healthz`, so a load
/// balancer can still probe the plain port).
pub async fn redirect_to_https(
    session: &mut Session,
    ctx: &mut RequestCtx,
    state: &AppState,
) -> Result<bool> {
    let Some(tls) = &state.config.tls else {
        return Ok(false);
    };
    if !tls.redirect_http || ctx.tls || session.req_header().uri.path() == "/healthz" {
        return Ok(false);
    }
    let host = crate::proxy::upstream::request_host(session).unwrap_or_default();
    let host = without_port(&host);
    let port = tls.listen.port();
    let authority = if port == 443 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let path = session
        .req_header()
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let location = format!("https://{authority}{path}");
    let header = response_header(
        308,
        "text/plain; charset=utf-8",
        0,
        &[
            ("Location", location),
            ("X-Request-Id", ctx.request_id.clone()),
        ],
    )?;
    ctx.answered = Some(308);
    send(session, header, bytes::Bytes::new()).await?;
    Ok(true)
}

/// `example.com:80` → `example.com`, `[::1]:80` → `[::1]`.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p))
            if p.chars().all(|c| c.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => host,
    }
}

/// `Strict-Transport-Security` on responses sent over TLS.
pub fn add_hsts(header: &mut ResponseHeader, ctx: &RequestCtx) {
    if let Some(value) = ctx.hsts.as_deref() {
        if ctx.tls {
            let _ = header.insert_header("Strict-Transport-Security", value);
        }
    }
}

/// `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Real-IP` for the upstream. An incoming
/// chain is extended only when it came from a trusted proxy; otherwise it is replaced.
pub fn forwarding_headers(
    req: &mut RequestHeader,
    ctx: &RequestCtx,
    trusted: &[Cidr],
) -> Result<()> {
    let Some(peer) = ctx.peer_ip else {
        return Ok(());
    };
    let from_trusted = trusted.iter().any(|c| c.contains(peer));
    let incoming = req
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let chain = match incoming {
        Some(prev) if from_trusted && !prev.trim().is_empty() => format!("{prev}, {peer}"),
        _ => peer.to_string(),
    };
    req.insert_header("X-Forwarded-For", chain)?;
    let incoming_proto = req
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let proto = match incoming_proto {
        Some(p) if from_trusted && (p == "http" || p == "https") => p,
        _ => if ctx.tls { "https" } else { "http" }.to_string(),
    };
    req.insert_header("X-Forwarded-Proto", proto.as_str())?;
    // RFC 7239's `Forwarded` follows the same rule: a client's own is replaced, a trusted
    // proxy's is extended with this hop.
    let element = forwarded_element(peer, &proto);
    let forwarded = match req.headers.get("forwarded").and_then(|v| v.to_str().ok()) {
        Some(prev) if from_trusted && !prev.trim().is_empty() => format!("{prev}, {element}"),
        _ => element,
    };
    req.insert_header("Forwarded", forwarded)?;
    if let Some(ip) = ctx.client_ip {
        req.insert_header("X-Real-IP", ip.to_string())?;
    }
    Ok(())
}

/// One `Forwarded` element for this hop (IPv6 addresses are quoted and bracketed).
fn forwarded_element(peer: IpAddr, proto: &str) -> String {
    match peer {
        IpAddr::V4(ip) => format!("for={ip};proto={proto}"),
        IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto={proto}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_elements_quote_ipv6() {
        let v4 = forwarded_element("10.1.2.3".parse().expect("ip"), "https");
        assert_eq!(v4, "for=10.1.2.3;proto=https");
        let v6 = forwarded_element("2001:db8::1".parse().expect("ip"), "http");
        assert_eq!(v6, "for=\"[2001:db8::1]\";proto=http");
    }

    #[test]
    fn client_ip_trusts_only_trusted_proxies() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            client_ip(ip("1.2.3.4"), Some("9.9.9.9"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("9.9.9.9"), &trusted),
            ip("9.9.9.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("6.6.6.6, 9.9.9.9, 10.0.0.7"), &trusted),
            ip("9.9.9.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("garbage"), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(client_ip(ip("10.0.0.5"), None, &trusted), ip("10.0.0.5"));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(without_port("example.com:8080"), "example.com");
        assert_eq!(without_port("example.com"), "example.com");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }
}
