//! Configuration errors that point at the place to fix: `file:line: message`, or
//! `env: NAME="value" is not valid: reason`, like the gateway's.

use std::fmt;
use std::ops::Range;

/// A configuration problem, located in a file (and a line when known) or in a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `env` for an environment variable.
    pub origin: String,
    /// 1-based line in `origin`, when the problem came from a file.
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub fn in_file(file: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            origin: file.to_owned(),
            line,
            message: message.into(),
        }
    }

    pub fn in_env(var: &str, value: &str, reason: impl fmt::Display) -> Self {
        Self {
            origin: "env".to_owned(),
            line: None,
            message: format!("{var}=\"{value}\" is not valid: {reason}"),
        }
    }

    /// A setting that must be given somewhere and was not.
    pub fn missing(message: impl Into<String>) -> Self {
        Self {
            origin: "config".to_owned(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.origin, line, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Turns a byte span of `source` into a 1-based line number.
pub fn line_of(source: &str, span: Option<Range<usize>>) -> Option<usize> {
    let start = span?.start.min(source.len());
    Some(source[..start].bytes().filter(|b| *b == b'\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_count_from_one() {
        let src = "a = 1\nb = 2\n";
        assert_eq!(line_of(src, Some(0..1)), Some(1));
        assert_eq!(line_of(src, Some(6..7)), Some(2));
        assert_eq!(line_of(src, None), None);
    }

    #[test]
    fn display_names_the_place() {
        let e = ConfigError::in_file("conf/backend.toml", Some(3), "bad");
        assert_eq!(e.to_string(), "conf/backend.toml:3: bad");
        let e = ConfigError::in_env("BACKEND_LISTEN", "x", "expected host:port");
        assert_eq!(
            e.to_string(),
            "env: BACKEND_LISTEN=\"x\" is not valid: expected host:port"
        );
    }
}
