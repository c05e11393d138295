//! Every error the gateway itself answers, and its mapping to HTTP, in one place.
//!
//! Ollama routes get `{"error": "<message>", "code": "<code>"}` so Ollama clients show the
//! message; `/v1/*` routes get OpenAI's `{"error": {"message", "type", "code"}}`.

mod write;

pub use write::{error_response, header as response_header, send, write_bytes, write_json};

use serde_json::json;

/// Which client family reads the error, chosen by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    Ollama,
    OpenAi,
}

impl ErrorShape {
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/v1/") {
            ErrorShape::OpenAi
        } else {
            ErrorShape::Ollama
        }
    }
}

/// An error answered by the gateway instead of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u16,
    /// Machine-readable code from DESIGN.md (`bad_request`, `upstream_unavailable`, ...).
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` (429 and 503 always carry one).
    pub retry_after: Option<u64>,
    /// Further headers the answer needs (`WWW-Authenticate`, rate-limit fields...).
    pub headers: Vec<(&'static str, String)>,
}

impl GatewayError {
    /// Messages often quote what the client sent; they are cut to a sane length here, once
    /// for every error, so no answer echoes a 10 MB value back.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: crate::client_text::clip_message(message.into()),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn unauthorized(message: impl Into<String>, www_authenticate: String) -> Self {
        Self::new(401, "unauthorized", message).with_header("WWW-Authenticate", www_authenticate)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// Ollama's own wording, so clients that match on it (e.g. to offer a pull) still work.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            404,
            "model_not_found",
            format!("model \"{model}\" not found, try pulling it first"),
        )
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(503, "upstream_unavailable", message)
        }
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, "upstream_unavailable", message)
    }

    /// The JSON body in the shape the route's clients understand.
    pub fn body(&self, shape: ErrorShape) -> serde_json::Value {
        match shape {
            ErrorShape::Ollama => json!({ "error": self.message, "code": self.code }),
            ErrorShape::OpenAi => json!({
                "error": { "message": self.message, "type": self.openai_type(), "code": self.code }
            }),
        }
    }

    fn openai_type(&self) -> &'static str {
        match self.status {
            400 | 404 | 413 => "invalid_request_error",
            401 => "authentication_error",
            405 => "invalid_request_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "api_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e = GatewayError::model_not_found("x");
        assert_eq!(
            e.body(ErrorShape::Ollama),
            json!({"error": "model \"x\" not found, try pulling it first", "code": "model_not_found"})
        );
        let e = GatewayError::bad_request("bad");
        assert_eq!(
            e.body(ErrorShape::OpenAi),
            json!({"error": {"message": "bad", "type": "invalid_request_error", "code": "bad_request"}})
        );
        assert_eq!(ErrorShape::for_path("/v1/models"), ErrorShape::OpenAi);
        assert_eq!(ErrorShape::for_path("/api/chat"), ErrorShape::Ollama);
    }
}
