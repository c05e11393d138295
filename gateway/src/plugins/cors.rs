//! CORS, per the Fetch standard: preflights answered at the edge (before auth: browsers send
//! them without credentials), and allowed origins echoed on real responses so pages can read
//! them, including the quota and rate-limit headers.

use async_trait::async_trait;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{Flow, LocalReply, Plugin};
use crate::config::CorsConfig;
use crate::context::RequestCtx;
use crate::errors::GatewayError;

pub struct Cors {
    pub config: CorsConfig,
}

impl Cors {
    /// The origin to echo, when it is allowed. With `*` and no credentials, `*` itself.
    fn allowed(&self, origin: &str) -> Option<String> {
        let rule = self.config.origins.iter().find(|r| r.matches(origin))?;
        Some(match rule {
            crate::config::OriginRule::Any if !self.config.allow_credentials => "*".to_string(),
            _ => origin.to_string(),
        })
    }

    fn header_allowed(&self, name: &str) -> bool {
        let name = name.trim().to_ascii_lowercase();
        self.config
            .allow_headers
            .iter()
            .any(|h| match h.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => *h == name,
            })
    }

    fn preflight(&self, origin: &str, method: &str, requested: &str) -> Flow {
        let refuse = |why: String| {
            Flow::Respond(GatewayError::forbidden(format!(
                "CORS preflight refused: {why}"
            )))
        };
        let Some(allow_origin) = self.allowed(origin) else {
            return refuse(format!("origin {origin} is not allowed"));
        };
        if !self
            .config
            .allow_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
        {
            return refuse(format!("method {method} is not allowed"));
        }
        let headers: Vec<&str> = requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(bad) = headers.iter().find(|h| !self.header_allowed(h)) {
            return refuse(format!("header {bad} is not allowed"));
        }
        let mut reply = vec![
            ("Access-Control-Allow-Origin", allow_origin),
            (
                "Access-Control-Allow-Methods",
                self.config.allow_methods.join(", "),
            ),
            (
                "Access-Control-Max-Age",
                self.config.max_age.as_secs().to_string(),
            ),
            (
                "Vary",
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".to_string(),
            ),
        ];
        if !headers.is_empty() {
            reply.push(("Access-Control-Allow-Headers", headers.join(", ")));
        }
        if self.config.allow_credentials {
            reply.push(("Access-Control-Allow-Credentials", "true".to_string()));
        }
        Flow::Reply(LocalReply {
            status: 204,
            headers: reply,
        })
    }
}

fn header<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

#[async_trait]
impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    async fn on_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow> {
        let Some(origin) = header(session, "origin").map(str::to_string) else {
            return Ok(Flow::Continue);
        };
        let method = header(session, "access-control-request-method");
        if session.req_header().method == http::Method::OPTIONS {
            if let Some(method) = method {
                let requested = header(session, "access-control-request-headers").unwrap_or("");
                return Ok(self.preflight(&origin, method, requested));
            }
        }
        ctx.cors_origin = self.allowed(&origin);
        Ok(Flow::Continue)
    }

    fn on_response(&self, header: &mut ResponseHeader, ctx: &RequestCtx) {
        if header.headers.contains_key("access-control-allow-origin") {
            return; // a preflight answer already carries its own
        }
        let _ = header.append_header("Vary", "Origin");
        let Some(origin) = &ctx.cors_origin else {
            return;
        };
        let _ = header.insert_header("Access-Control-Allow-Origin", origin.as_str());
        if self.config.allow_credentials {
            let _ = header.insert_header("Access-Control-Allow-Credentials", "true");
        }
        if !self.config.expose_headers.is_empty() {
            let _ = header.insert_header(
                "Access-Control-Expose-Headers",
                self.config.expose_headers.join(", "),
            );
        }
    }
}
