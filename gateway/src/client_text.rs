//! Client-supplied text (model names, paths, user agents, request ids) on its way into the
//! gateway's own logs and error messages.
//!
//! Such text is hostile until proven otherwise: a `\n` in a model name would forge a whole
//! access-log line, ANSI escapes would repaint an operator's terminal, and a 10 MB value
//! would make a 10 MB log line or error body. So it is escaped (control characters, quotes
//! and backslashes become Rust-style escapes) and cut to a sane length wherever it is shown.

use std::fmt;

/// Longest client value shown in a log field, in bytes (before escaping).
pub const LOG_VALUE_MAX: usize = 256;
/// Longest message in an error the gateway answers, in bytes.
pub const ERROR_MESSAGE_MAX: usize = 1024;

/// Displays a client value escaped and cut to [`LOG_VALUE_MAX`] bytes.
pub struct Clean<'a>(pub &'a str);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, cut) = clip(self.0, LOG_VALUE_MAX);
        for c in head.chars() {
            match c {
                '"' | '\\' => write!(f, "\\{c}")?,
                c if c.is_control() => write!(f, "{}", c.escape_default())?,
                c => write!(f, "{c}")?,
            }
        }
        if cut > 0 {
            write!(f, "...(+{cut} bytes)")?;
        }
        Ok(())
    }
}

/// The longest prefix of `s` within `max` bytes (on a character boundary) and the number of
/// bytes left out.
pub fn clip(s: &str, max: usize) -> (&str, usize) {
    if s.len() <= max {
        return (s, 0);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], s.len() - end)
}

/// An error message cut to [`ERROR_MESSAGE_MAX`] bytes, saying how much was left out.
pub fn clip_message(message: String) -> String {
    match clip(&message, ERROR_MESSAGE_MAX) {
        (_, 0) => message,
        (head, cut) => format!("{head}...(+{cut} bytes)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_line_breaks_escapes_and_quotes() {
        let shown = Clean("llama3\n2026-01-01 INFO access: forged \u{1b}[31mred\"").to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert_eq!(
            shown,
            "llama3\\n2026-01-01 INFO access: forged \\u{1b}[31mred\\\""
        );
    }

    #[test]
    fn cuts_long_values_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let shown = Clean(&long).to_string();
        assert!(shown.ends_with("...(+1744 bytes)"), "{shown}");
        assert!(shown.len() < LOG_VALUE_MAX + 20);
        let m = clip_message("x".repeat(5000));
        assert_eq!(m.len(), ERROR_MESSAGE_MAX + "...(+3976 bytes)".len());
    }
}
