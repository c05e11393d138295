//! Finding the line where a table (`defaults`, `orgs.acme`, ...) is written in a policy file,
//! for errors about the table as a whole (defined twice, limits that contradict each other)
//! that no single value's span points at.
//!
//! TOML lets the same table be written as a header (`[orgs.acme]`, `[ orgs."acme" ]`), as
//! dotted keys (`orgs.acme.burst = 2`) or as an inline table under its parent
//! (`[orgs]` then `acme = { ... }`); each is recognised, comparing key paths with spaces and
//! quotes removed.

/// The 1-based line of the first place `path` (dotted, e.g. `orgs.acme`) is written.
pub fn table_line(text: &str, path: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = normalized(raw);
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let name = header.split(']').next().unwrap_or_default();
            if name == path || name.starts_with(&format!("{path}.")) {
                return Some(i + 1);
            }
            current = name.to_string();
            continue;
        }
        let key = line.split('=').next().unwrap_or_default();
        let full = if current.is_empty() {
            key.to_string()
        } else {
            format!("{current}.{key}")
        };
        if line.contains('=') && (full == path || full.starts_with(&format!("{path}."))) {
            return Some(i + 1);
        }
    }
    None
}

/// The line without comments, spaces and quotes (a rough key-path comparison form).
fn normalized(line: &str) -> String {
    let code = line.split('#').next().unwrap_or_default();
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_headers_dotted_keys_and_inline_tables() {
        assert_eq!(
            table_line("# x\n[orgs.acme]\nburst = 1\n", "orgs.acme"),
            Some(2)
        );
        assert_eq!(table_line("\n[ orgs.\"acme\" ]\n", "orgs.acme"), Some(2));
        assert_eq!(
            table_line("# x\norgs.acme.burst = 2\n", "orgs.acme"),
            Some(2)
        );
        assert_eq!(
            table_line("[orgs]\nacme = { burst = 2 }\n", "orgs.acme"),
            Some(2)
        );
        assert_eq!(
            table_line("\ndefaults = { burst = 2 }\n", "defaults"),
            Some(2)
        );
        assert_eq!(table_line("[orgs.acme.users.bob]\n", "orgs.acme"), Some(1));
        // A longer id is another org.
        assert_eq!(
            table_line("[orgs.acme-eu]\nburst = 2\n\n[orgs.acme]\n", "orgs.acme"),
            Some(4)
        );
        assert_eq!(table_line("[orgs.other]\nburst = 2\n", "orgs.acme"), None);
    }
}
