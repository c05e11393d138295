//! The pool seen as one Ollama: `/api/tags`, `/api/ps` and `/v1/models` merged across the
//! healthy instances, deduplicated by model name.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::instance::normalize_model;
use super::Pool;

/// Which of an instance's lists to merge.
#[derive(Debug, Clone, Copy)]
pub enum Listing {
    Tags,
    Ps,
}

impl Pool {
    /// Merged entries, sorted by name; the first healthy instance's entry wins for a name.
    pub fn merged(&self, listing: Listing) -> Vec<Value> {
        let mut merged: BTreeMap<String, Value> = BTreeMap::new();
        for instance in self.instances.iter().filter(|i| i.is_healthy()) {
            let sets = instance.models.load();
            let entries = match listing {
                Listing::Tags => &sets.tags,
                Listing::Ps => &sets.ps,
            };
            for entry in entries {
                let Some(name) = entry
                    .get("name")
                    .or_else(|| entry.get("model"))
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                merged
                    .entry(normalize_model(name))
                    .or_insert_with(|| entry.clone());
            }
        }
        merged.into_values().collect()
    }

    /// `/v1/models/{model}`, when some healthy instance has it.
    pub fn openai_model(&self, model: &str) -> Option<Value> {
        let wanted = normalize_model(model);
        self.merged(Listing::Tags)
            .iter()
            .find(|e| {
                e.get("name")
                    .and_then(Value::as_str)
                    .map(normalize_model)
                    .as_deref()
                    == Some(wanted.as_str())
            })
            .and_then(openai_model)
    }
}

/// One `/api/tags` entry in OpenAI's model shape.
pub fn openai_model(entry: &Value) -> Option<Value> {
    let name = entry
        .get("name")
        .or_else(|| entry.get("model"))
        .and_then(Value::as_str)?;
    let created = entry
        .get("modified_at")
        .and_then(Value::as_str)
        .and_then(parse_year_start)
        .unwrap_or(0);
    Some(json!({ "id": name, "object": "model", "created": created, "owned_by": "library" }))
}

/// Ollama reports `modified_at` as RFC 3339; OpenAI wants seconds. A rough value (start of the
/// day) is enough for a listing and avoids a date crate.
fn parse_year_start(text: &str) -> Option<i64> {
    let date = text.get(..10)?;
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_to_epoch() {
        assert_eq!(parse_year_start("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_year_start("2024-05-01T10:00:00.1Z"),
            Some(1_714_521_600)
        );
        assert_eq!(parse_year_start("bad"), None);
    }
}
