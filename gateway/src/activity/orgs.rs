//! Per-org counters since the process started (requests and tokens by model, rate-limited and
//! quota-refused requests), for the console's orgs view. Bounded: orgs come from verified
//! tokens only, and past the caps new names are counted under "other".

use std::collections::HashMap;
use std::sync::Mutex;

/// Most orgs and models per org counted by name.
const MAX_ORGS: usize = 10_000;
const MAX_MODELS: usize = 64;
const OTHER: &str = "other";

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelCounts {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Clone, Default)]
pub struct OrgCounts {
    pub requests: u64,
    pub rate_limited: u64,
    pub quota_refused: u64,
    pub models: HashMap<String, ModelCounts>,
}

/// How one request ended, for its org's counters.
pub struct Outcome<'a> {
    pub org: &'a str,
    pub model: Option<&'a str>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub rate_limited: bool,
    pub quota_refused: bool,
}

#[derive(Default)]
pub struct OrgActivity {
    orgs: Mutex<HashMap<String, OrgCounts>>,
}

impl OrgActivity {
    /// Counts one request. Cost: one short lock and two map lookups.
    pub fn record(&self, o: &Outcome<'_>) {
        let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        let org = bounded_entry(&mut orgs, o.org, MAX_ORGS);
        org.requests += 1;
        org.rate_limited += u64::from(o.rate_limited);
        org.quota_refused += u64::from(o.quota_refused);
        if let Some(model) = o.model {
            let m = bounded_entry(&mut org.models, model, MAX_MODELS);
            m.requests += 1;
            m.prompt_tokens += o.prompt_tokens;
            m.completion_tokens += o.completion_tokens;
        }
    }

    pub fn get(&self, org: &str) -> Option<OrgCounts> {
        let orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        orgs.get(org).cloned()
    }

    /// Every org counted so far.
    pub fn orgs(&self) -> Vec<String> {
        let orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        orgs.keys().filter(|k| *k != OTHER).cloned().collect()
    }
}

/// The entry for `name`, or the shared "other" one once the map is full.
fn bounded_entry<'m, V: Default>(
    map: &'m mut HashMap<String, V>,
    name: &str,
    max: usize,
) -> &'m mut V {
    let key = if map.contains_key(name) || map.len() < max {
        name
    } else {
        OTHER
    };
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome<'a>(org: &'a str, model: Option<&'a str>) -> Outcome<'a> {
        Outcome {
            org,
            model,
            prompt_tokens: 10,
            completion_tokens: 5,
            rate_limited: false,
            quota_refused: false,
        }
    }

    #[test]
    fn counts_by_org_and_model() {
        let a = OrgActivity::default();
        a.record(&outcome("acme", Some("llama3:latest")));
        a.record(&outcome("acme", Some("llama3:latest")));
        a.record(&Outcome {
            rate_limited: true,
            ..outcome("acme", None)
        });
        let acme = a.get("acme").unwrap();
        assert_eq!((acme.requests, acme.rate_limited), (3, 1));
        let m = &acme.models["llama3:latest"];
        assert_eq!(
            (m.requests, m.prompt_tokens, m.completion_tokens),
            (2, 20, 10)
        );
        assert!(a.get("globex").is_none());
    }

    #[test]
    fn models_past_the_cap_count_as_other() {
        let a = OrgActivity::default();
        for i in 0..MAX_MODELS + 5 {
            a.record(&outcome("acme", Some(&format!("m{i}"))));
        }
        let acme = a.get("acme").unwrap();
        assert_eq!(acme.models.len(), MAX_MODELS + 1);
        assert_eq!(acme.models[OTHER].requests, 5);
    }
}
