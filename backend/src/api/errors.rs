//! Every error the backend answers, and its mapping to HTTP, in one place. The body is the
//! gateway's Ollama-route shape, `{"error": "<human message>", "code": "<machine code>"}`,
//! so a client handles errors the same whichever process made them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::db::DbError;

/// Seconds a client is told to wait when the database is unavailable.
const DB_RETRY_AFTER_S: u64 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    pub www_authenticate: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A field of the body or query that is wrong: the message starts with its name.
    pub fn field(name: &str, problem: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("{name}: {problem}"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// Unknown ids and ids the caller may not see get the same answer: existence is not
    /// leaked across orgs or users.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                message,
            )
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the backend's log",
        )
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self {
            www_authenticate: Some(e.www_authenticate()),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", e.description)
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(why) => {
                crate::metrics::get().db_unavailable.inc();
                tracing::warn!(error = %why, "database unavailable");
                Self::unavailable(
                    "the database is unavailable; retry shortly",
                    DB_RETRY_AFTER_S,
                )
            }
            DbError::Query(e) => {
                tracing::error!(error = %e, "database query failed");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "code": self.code});
        let mut resp = (self.status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(v) = self
            .www_authenticate
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
