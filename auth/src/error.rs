//! Why a request was refused, in words a client developer can act on.
//!
//! Descriptions are short fixed phrases ("token expired", "bad signature"...): they end up in
//! the `WWW-Authenticate` header and the JSON error body, so they never carry the token, key
//! material or library internals.

use std::fmt;

use jsonwebtoken::errors::{Error as JwtError, ErrorKind as JwtErrorKind};

pub(super) const MISSING_TOKEN: &str = "missing bearer token";
pub(super) const UNSUPPORTED_SCHEME: &str = "unsupported authorization scheme";
pub(super) const TOO_LARGE: &str = "token too large";
pub(super) const MALFORMED: &str = "malformed token";
pub(super) const ALGORITHM: &str = "algorithm not allowed";
pub(super) const CRITICAL_HEADER: &str = "unsupported critical header";
pub(super) const BAD_SIGNATURE: &str = "bad signature";
pub(super) const UNKNOWN_KID: &str = "unknown key id";
pub(super) const EXPIRED: &str = "token expired";
pub(super) const NOT_YET_VALID: &str = "token not yet valid";
pub(super) const WRONG_ISSUER: &str = "wrong issuer";
pub(super) const WRONG_AUDIENCE: &str = "wrong audience";

/// Whether the client sent no usable credentials at all, or sent a token that failed.
///
/// RFC 6750 §3.1 treats the two differently: a request without bearer credentials (no header,
/// or another scheme such as `Basic`) gets a bare challenge, without an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthErrorKind {
    MissingToken,
    InvalidToken,
}

/// A refused `Authorization` header: answered with 401 and [`AuthError::www_authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub kind: AuthErrorKind,
    pub description: String,
}

impl AuthError {
    /// No usable credentials at all (a bare challenge).
    pub fn missing(description: &str) -> Self {
        Self {
            kind: AuthErrorKind::MissingToken,
            description: description.to_owned(),
        }
    }

    /// Credentials that failed; `description` must be safe to show (no secret in it).
    pub fn invalid(description: impl Into<String>) -> Self {
        Self {
            kind: AuthErrorKind::InvalidToken,
            description: description.into(),
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750): `Bearer realm="corral"` for a missing token,
    /// `Bearer realm="corral", error="invalid_token", error_description="<description>"`
    /// otherwise. The description is reduced to the characters RFC 6750 §3 allows inside the
    /// quoted string (printable ASCII but `"` and `\`), so it is always a valid header value.
    pub fn www_authenticate(&self) -> String {
        match self.kind {
            AuthErrorKind::MissingToken => "Bearer realm=\"corral\"".to_owned(),
            AuthErrorKind::InvalidToken => format!(
                "Bearer realm=\"corral\", error=\"invalid_token\", error_description=\"{}\"",
                header_safe(&self.description)
            ),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl std::error::Error for AuthError {}

/// At most this many characters of a description go into the header.
const MAX_DESCRIPTION: usize = 200;

/// Keeps `%x20-21 / %x23-5B / %x5D-7E` (RFC 6750 §3, `error_description`); anything else
/// becomes `?`.
fn header_safe(description: &str) -> String {
    description
        .chars()
        .take(MAX_DESCRIPTION)
        .map(|c| match c {
            '"' | '\\' => '?',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// What one verification attempt against one key concluded.
#[derive(Debug)]
pub(super) enum Attempt {
    /// The signature does not match this key: another key may still fit.
    WrongKey,
    /// The signature matched (or the token is broken whatever the key): this is the answer.
    Refused(AuthError),
}

/// Maps a jsonwebtoken failure to the reason a client is told.
///
/// Claim checks (`exp`, `nbf`, `iss`, `aud`) run only after the signature verified, so their
/// errors are final; a signature mismatch lets the caller try the next key.
pub(super) fn from_jwt(err: &JwtError) -> Attempt {
    let description = match err.kind() {
        JwtErrorKind::InvalidSignature => return Attempt::WrongKey,
        // The key itself is unusable for this algorithm (keys are checked when loaded, so this
        // means a mismatch such as a P-384 signature length): try the next one.
        JwtErrorKind::InvalidEcdsaKey
        | JwtErrorKind::InvalidEddsaKey
        | JwtErrorKind::InvalidRsaKey(_)
        | JwtErrorKind::InvalidKeyFormat => {
            tracing::debug!(error = %err, "JWT key did not fit the token");
            return Attempt::WrongKey;
        }
        JwtErrorKind::ExpiredSignature => EXPIRED.to_owned(),
        JwtErrorKind::ImmatureSignature => NOT_YET_VALID.to_owned(),
        JwtErrorKind::InvalidIssuer => WRONG_ISSUER.to_owned(),
        JwtErrorKind::InvalidAudience => WRONG_AUDIENCE.to_owned(),
        JwtErrorKind::InvalidAlgorithm | JwtErrorKind::MissingAlgorithm => ALGORITHM.to_owned(),
        JwtErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim} claim"),
        JwtErrorKind::InvalidClaimFormat(claim) => format!("malformed {claim} claim"),
        _ => MALFORMED.to_owned(),
    };
    Attempt::Refused(AuthError::invalid(description))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_gets_a_bare_challenge() {
        let e = AuthError::missing(MISSING_TOKEN);
        assert_eq!(e.www_authenticate(), "Bearer realm=\"corral\"");
    }

    #[test]
    fn invalid_token_names_the_reason() {
        let e = AuthError::invalid(EXPIRED);
        assert_eq!(
            e.www_authenticate(),
            "Bearer realm=\"corral\", error=\"invalid_token\", error_description=\"token expired\""
        );
    }

    #[test]
    fn description_is_safe_in_a_quoted_string() {
        let e = AuthError::invalid("a \"quoted\" \\ back\r\nslash é");
        let v = e.www_authenticate();
        assert!(
            v.ends_with("error_description=\"a ?quoted? ? back??slash ?\""),
            "{v}"
        );
        assert!(http::HeaderValue::from_str(&v).is_ok());
        let long = AuthError::invalid("x".repeat(1000)).www_authenticate();
        assert!(long.len() < 300);
    }
}
