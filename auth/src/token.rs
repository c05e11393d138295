//! Reading the bearer token out of `Authorization`, and its JOSE header, before any crypto.
//!
//! The header is parsed here rather than by jsonwebtoken so that an algorithm the library does
//! not know (`none`, `HS1`...) is reported as "algorithm not allowed" instead of a parse error,
//! and so that the `kid` can pick JWKS keys before verification.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::error::{self, AuthError};

/// `Authorization` values longer than this are refused before any parsing (a JWT from a real
/// identity provider is well under 2 KiB; this bounds the work a bogus header can cause).
pub(super) const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235 §2.1).
pub(super) fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let Some(value) = authorization else {
        return Err(AuthError::missing(error::MISSING_TOKEN));
    };
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthError::invalid(error::TOO_LARGE));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() {
        return Err(AuthError::missing(error::MISSING_TOKEN));
    }
    let Some((scheme, rest)) = value.split_once([' ', '\t']) else {
        // A single word: `Bearer` alone, or a token pasted without its scheme.
        return Err(AuthError::missing(error::MISSING_TOKEN));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        // RFC 6750 §3.1: another scheme means no bearer credentials, so no error code.
        return Err(AuthError::missing(error::UNSUPPORTED_SCHEME));
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(AuthError::missing(error::MISSING_TOKEN));
    }
    // RFC 6750 §2.1 b64token; a JWS compact serialization uses a subset of it.
    let b64token = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if !b64token {
        return Err(AuthError::invalid(error::MALFORMED));
    }
    Ok(token)
}

/// What the verifier needs from the JOSE header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JoseHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Parses the header of a compact JWS (`header.payload.signature`).
pub(super) fn parse_header(token: &str) -> Result<JoseHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::invalid(error::MALFORMED));
    };
    let raw = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::invalid(error::MALFORMED))?;
    let raw: RawHeader =
        serde_json::from_slice(&raw).map_err(|_| AuthError::invalid(error::MALFORMED))?;
    let alg = raw
        .alg
        .ok_or_else(|| AuthError::invalid(error::MALFORMED))?;
    let alg = algorithm_from_name(&alg).ok_or_else(|| AuthError::invalid(error::ALGORITHM))?;
    if raw.crit.is_some() {
        // RFC 7515 §4.1.11: extensions we do not understand must make the token invalid.
        return Err(AuthError::invalid(error::CRITICAL_HEADER));
    }
    Ok(JoseHeader { alg, kid: raw.kid })
}

/// The signature algorithms of RFC 7518 / RFC 8037 that some key type can use. `none` and
/// anything unknown have no entry, so they can never be accepted.
pub(super) fn algorithm_from_name(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuthErrorKind;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(Some("Bearer a.b.c")), Ok("a.b.c"));
        assert_eq!(bearer_token(Some("bearer   a.b.c ")), Ok("a.b.c"));
        assert_eq!(bearer_token(Some("BEARER\ta.b.c")), Ok("a.b.c"));
    }

    #[test]
    fn missing_or_other_scheme_is_a_bare_challenge() {
        let no_scheme = Some("eyJhbGciOi.e30.sig");
        for value in [
            None,
            Some(""),
            Some("  "),
            Some("Bearer"),
            Some("Bearer  "),
            no_scheme,
        ] {
            let e = bearer_token(value).unwrap_err();
            assert_eq!(e, AuthError::missing(error::MISSING_TOKEN), "{value:?}");
        }
        for value in ["Basic dXNlcjpwYXNz", "Token abc"] {
            let e = bearer_token(Some(value)).unwrap_err();
            assert_eq!(e.kind, AuthErrorKind::MissingToken);
            assert_eq!(e.description, error::UNSUPPORTED_SCHEME);
        }
    }

    #[test]
    fn oversized_header_refused_before_parsing() {
        let value = format!("Bearer {}", "a".repeat(16 * 1024));
        assert_eq!(
            bearer_token(Some(&value)).unwrap_err(),
            AuthError::invalid(error::TOO_LARGE)
        );
        // Exactly at the limit is still read.
        let value = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN - 7));
        assert!(bearer_token(Some(&value)).is_ok());
    }

    #[test]
    fn token_with_odd_characters_is_malformed() {
        let e = bearer_token(Some("Bearer a.b.c d")).unwrap_err();
        assert_eq!(e, AuthError::invalid(error::MALFORMED));
        let e = bearer_token(Some("Bearer a\"b")).unwrap_err();
        assert_eq!(e, AuthError::invalid(error::MALFORMED));
    }

    #[test]
    fn header_alg_and_kid() {
        let t = format!(
            "{}.e30.sig",
            b64(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#)
        );
        assert_eq!(
            parse_header(&t),
            Ok(JoseHeader {
                alg: Algorithm::RS256,
                kid: Some("k1".into())
            })
        );
    }

    #[test]
    fn none_and_unknown_algorithms_refused() {
        for alg in ["none", "None", "NONE", "HS1", ""] {
            let t = format!("{}.e30.", b64(&format!(r#"{{"alg":"{alg}"}}"#)));
            assert_eq!(
                parse_header(&t),
                Err(AuthError::invalid(error::ALGORITHM)),
                "{alg}"
            );
        }
    }

    #[test]
    fn broken_headers_are_malformed() {
        let no_alg = format!("{}.e30.sig", b64(r#"{"typ":"JWT"}"#));
        let not_json = format!("{}.e30.sig", b64("hello"));
        let kid_number = format!("{}.e30.sig", b64(r#"{"alg":"HS256","kid":5}"#));
        for t in [
            "garbage",
            "a.b",
            "a.b.c.d.e",
            "!!!.e30.sig",
            &no_alg,
            &not_json,
            &kid_number,
        ] {
            assert_eq!(
                parse_header(t),
                Err(AuthError::invalid(error::MALFORMED)),
                "{t}"
            );
        }
    }

    #[test]
    fn critical_extensions_refused() {
        let t = format!("{}.e30.sig", b64(r#"{"alg":"HS256","crit":["exp"]}"#));
        assert_eq!(
            parse_header(&t),
            Err(AuthError::invalid(error::CRITICAL_HEADER))
        );
    }
}
