//! The operator console: a static page built into the binary (see `build.rs`), served at
//! `console.path` with headers that let it run its own scripts and nothing else. The page
//! reads the admin API (`admin/api.rs`) with the credential the user pastes into it.

use bytes::Bytes;
use pingora_proxy::Session;

use crate::context::RequestCtx;
use crate::errors::{write_bytes, GatewayError};
use crate::state::AppState;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));
}

/// Only the page's own files: no inline script or style, no other origin, no framing, no
/// form posts. `connect-src 'self'` lets it call the admin API on this gateway.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// Answers a console path; `Ok(false)` when the path is not one (or the console is off).
pub async fn serve(
    session: &mut Session,
    ctx: &mut RequestCtx,
    state: &AppState,
) -> pingora_error::Result<bool> {
    let console = &state.config.console;
    let root = console.path.trim_end_matches('/');
    // Every request passes here: look before copying the path.
    let path = session.req_header().uri.path();
    if !console.enabled || (path != root && !path.starts_with(&console.path)) {
        return Ok(false);
    }
    let path = path.to_string();
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        let e = GatewayError::new(405, "method_not_allowed", "the console only answers GET")
            .with_header("Allow", "GET, HEAD");
        return crate::proxy::respond_error(session, ctx, &secured(e)).await;
    }
    if path == root {
        let mut headers = page_headers(ctx);
        headers.push(("Location", console.path.clone()));
        write_bytes(
            session,
            308,
            "text/plain; charset=utf-8",
            Bytes::new(),
            &headers,
        )
        .await?;
        ctx.answered = Some(308);
        return Ok(true);
    }
    let name = match &path[console.path.len()..] {
        "" => "index.html",
        file => file,
    };
    let Some((_, body)) = assets::ASSETS.iter().find(|(n, _)| *n == name) else {
        let e = GatewayError::not_found(format!("{path} is not a console file"));
        return crate::proxy::respond_error(session, ctx, &secured(e)).await;
    };
    let body = Bytes::from_static(body);
    write_bytes(session, 200, content_type(name), body, &page_headers(ctx)).await?;
    ctx.answered = Some(200);
    Ok(true)
}

/// The security headers every console answer carries, errors included.
const SECURITY: [(&str, &str); 5] = [
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

fn page_headers(ctx: &RequestCtx) -> Vec<(&'static str, String)> {
    let mut h = crate::admin::own_headers(ctx);
    h.extend(SECURITY.iter().map(|(k, v)| (*k, v.to_string())));
    h
}

fn secured(e: GatewayError) -> GatewayError {
    SECURITY.iter().fold(e, |e, (k, v)| e.with_header(k, *v))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "text/plain; charset=utf-8",
    }
}
