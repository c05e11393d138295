//! API keys: the static credential clients such as Open WebUI, Continue or the OpenAI and
//! Ollama SDKs carry in `Authorization: Bearer ...` (or `x-api-key`).
//!
//! Format `crl_<id>_<secret>`: `id` is public and stable for the key's life (lists, logs, the
//! ledger, policy files name it); `secret` carries 256 bits from the OS RNG. Both are base62,
//! so a double-click selects the whole key and no character needs escaping anywhere. Only an
//! HMAC-SHA256 of the secret, keyed with a server-side pepper (`API_KEY_PEPPER`), is stored:
//! a leaked table cannot be turned back into keys, nor checked offline without the pepper.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Every key starts with this; any other bearer value is a JWT.
pub const PREFIX: &str = "crl_";
/// Characters of the public id (62^12, about 71 bits: unique without a lookup).
pub const ID_LEN: usize = 12;
/// Characters of the secret (62^43 > 2^256).
pub const SECRET_LEN: usize = 43;
/// The shortest pepper accepted, in bytes.
pub const MIN_PEPPER_BYTES: usize = 16;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The two parts of a presented key, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyParts<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// Whether a bearer value is meant as an API key (then it is never tried as a JWT).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The API key a request presents, if any: `x-api-key` (Anthropic-style clients), else a
/// bearer value starting with `crl_`. Anything else in `Authorization` is a JWT.
pub fn presented<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = authorization
        .and_then(|a| a.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    x_api_key.or(bearer.filter(|t| is_api_key(t)))
}

/// Splits `crl_<id>_<secret>`; the reason is safe to show (it never echoes the key).
pub fn parse(token: &str) -> Result<KeyParts<'_>, &'static str> {
    let rest = token.strip_prefix(PREFIX).ok_or("not an API key")?;
    let (id, secret) = rest.split_once('_').ok_or("malformed API key")?;
    let base62 = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    if id.len() != ID_LEN || secret.len() != SECRET_LEN || !base62(id) || !base62(secret) {
        return Err("malformed API key");
    }
    Ok(KeyParts { id, secret })
}

/// A fresh public id.
pub fn generate_id() -> Result<String, String> {
    random_base62(ID_LEN)
}

/// A fresh secret.
pub fn generate_secret() -> Result<String, String> {
    random_base62(SECRET_LEN)
}

/// The key as the client carries it.
pub fn format_key(id: &str, secret: &str) -> String {
    format!("{PREFIX}{id}_{secret}")
}

/// The last four characters of a secret, shown in lists so a key can be recognised.
pub fn last_four(secret: &str) -> &str {
    &secret[secret.len().saturating_sub(4)..]
}

/// `len` base62 characters from the OS RNG, without modulo bias (bytes of 248 or more are
/// drawn again).
fn random_base62(len: usize) -> Result<String, String> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::getrandom(&mut buf).map_err(|e| format!("the OS random source failed: {e}"))?;
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            out.push(BASE62[usize::from(*b % 62)] as char);
        }
    }
    Ok(out)
}

/// The server-side key of the secrets' HMAC. `Debug` never shows it.
#[derive(Clone)]
pub struct Pepper(Vec<u8>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

impl Pepper {
    /// From `API_KEY_PEPPER`'s value; too short a pepper is refused with the variable's name
    /// (never its value).
    pub fn new(value: &str) -> Result<Pepper, String> {
        if value.len() < MIN_PEPPER_BYTES {
            return Err(format!(
                "{} bytes, at least {MIN_PEPPER_BYTES} needed (e.g. `openssl rand -hex 32`)",
                value.len()
            ));
        }
        Ok(Pepper(value.as_bytes().to_vec()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    /// What is stored for a secret.
    pub fn hash(&self, secret: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A 32-byte key for another purpose (`label` names it), derived from the pepper, so one
    /// server secret serves them all (e.g. sealing idempotent replays of a new key).
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(b"corral derive: ");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `secret` hashes to `stored`, compared in constant time.
    pub fn matches(&self, secret: &str, stored: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(secret.as_bytes());
        mac.verify_slice(stored).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back() {
        let id = generate_id().expect("id");
        let secret = generate_secret().expect("secret");
        let key = format_key(&id, &secret);
        assert!(is_api_key(&key));
        assert_eq!(key.len(), PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
        let parts = parse(&key).expect("parses");
        assert_eq!((parts.id, parts.secret), (id.as_str(), secret.as_str()));
        assert_ne!(generate_secret().expect("secret"), secret);
    }

    #[test]
    fn keys_are_found_in_either_header() {
        assert_eq!(presented(Some("Bearer crl_x"), None), Some("crl_x"));
        assert_eq!(presented(Some("bearer  crl_x "), None), Some("crl_x"));
        assert_eq!(presented(Some("Bearer eyJ.a.b"), None), None);
        assert_eq!(
            presented(Some("Bearer eyJ.a.b"), Some("crl_y")),
            Some("crl_y")
        );
        assert_eq!(presented(None, None), None);
    }

    #[test]
    fn malformed_keys_are_refused_without_echo() {
        for bad in [
            "crl_",
            "crl_abc",
            "crl_ABCDEFGHIJKL_short",
            "crl_ABCDEFGHIJK_0123456789012345678901234567890123456789012",
            "crl_ABCDEFGHIJKL_012345678901234567890123456789012345678901-",
            "eyJhbGciOi.x.y",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(!e.contains(bad) || bad.is_empty(), "{e}");
        }
    }

    #[test]
    fn hashes_are_keyed_and_compared_exactly() {
        let pepper = Pepper::new("a-pepper-of-enough-bytes").expect("pepper");
        let other = Pepper::new("another-pepper-entirely").expect("pepper");
        let stored = pepper.hash("secret-one");
        assert_eq!(stored.len(), 32);
        assert!(pepper.matches("secret-one", &stored));
        assert!(!pepper.matches("secret-two", &stored));
        assert!(!other.matches("secret-one", &stored));
        assert!(!pepper.matches("secret-one", &stored[..31]));
        assert!(Pepper::new("short").is_err());
        assert_eq!(format!("{pepper:?}"), "Pepper(<redacted>)");
        assert_eq!(last_four("abcdefgh"), "efgh");
    }
}
