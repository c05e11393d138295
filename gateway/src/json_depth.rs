//! A nesting limit for JSON request bodies, checked before any parser or upstream sees them.
//!
//! serde skips unknown fields without counting their depth, and a chat request with an extra
//! field nested a thousand deep made Ollama answer 500: a member could turn that into
//! ejections of the whole pool. Real requests (messages, tools, JSON schemas for `format`)
//! nest a few dozen levels at most.

/// Deepest nesting of objects and arrays accepted: half of serde_json's recursion limit
/// (128), so every body that passes can still be parsed whole into a `serde_json::Value`
/// (the quota plugin does), whatever field the nesting sits under.
pub const MAX_DEPTH: usize = 64;

/// `Err` with a parser-style message (line and column) when `body` nests deeper than `max`.
/// Only brackets outside strings count; malformed JSON is left for the parser to report.
pub fn check(body: &[u8], max: usize) -> Result<(), String> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    let (line, column) = position(body, i);
                    return Err(format!(
                        "nested deeper than {max} levels at line {line} column {column}"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// 1-based line and column of byte `at`, as serde_json reports them.
fn position(body: &[u8], at: usize) -> (usize, usize) {
    let before = &body[..at];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_deep_nesting_and_ignores_brackets_in_strings() {
        let deep = format!(
            "{{\"model\":\"m\",\"x\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let e = check(deep.as_bytes(), 128).expect_err("too deep");
        assert_eq!(e, "nested deeper than 128 levels at line 1 column 145");
        let fine = format!(
            "{{\"model\":\"m\",\"x\":{}{}}}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(check(fine.as_bytes(), 128).is_ok());
        let quoted = format!(
            "{{\"content\":\"{}\\\"{}\"}}",
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(check(quoted.as_bytes(), 128).is_ok());
    }
}
