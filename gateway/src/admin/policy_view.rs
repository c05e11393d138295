//! `GET /admin/api/policy`: the policy the gateway enforces right now (every org's limits as
//! merged from the files), when it was loaded, and the last edit it refused.

use serde_json::{json, Map, Value};

use super::orgs_view::unix_s;
use crate::policy::{Limits, Period, UserOverride};
use crate::quota::period::rfc3339;
use crate::state::AppState;

pub fn render(state: &AppState) -> Value {
    let store = &state.policies;
    let policy = store.current();
    let orgs: Map<String, Value> = policy
        .orgs
        .iter()
        .map(|(name, org)| {
            let mut v = limits(&org.limits);
            v["users"] = overrides(&org.users);
            v["keys"] = overrides(&org.keys);
            (name.clone(), v)
        })
        .collect();
    json!({
        "loaded_at": rfc3339(unix_s(policy.loaded_at)),
        "age_s": store.age_s(),
        "files": policy.files,
        "last_error": store.last_refused().map(|(message, at)| {
            json!({"message": message, "at": rfc3339(unix_s(at))})
        }),
        "defaults": limits(&policy.defaults),
        "anonymous": {
            "requests_per_minute": policy.anonymous.requests_per_minute,
            "burst": policy.anonymous.burst,
        },
        "orgs": orgs,
    })
}

fn limits(l: &Limits) -> Value {
    json!({
        "requests_per_minute": l.requests_per_minute,
        "burst": l.burst,
        "user_requests_per_minute": l.user_requests_per_minute,
        "tokens_per_minute": l.tokens_per_minute,
        "max_concurrent_streams": l.max_concurrent_streams,
        "models": l.models.patterns(),
        "weight": l.weight,
        "admin_roles": l.admin_roles,
        "quota": {
            "period": match l.quota.period { Period::Month => "month", Period::Day => "day" },
            "soft_tokens": l.quota.soft_tokens,
            "hard_tokens": l.quota.hard_tokens,
        },
    })
}

fn overrides(map: &std::collections::HashMap<String, UserOverride>) -> Value {
    let entries: Map<String, Value> = map
        .iter()
        .map(|(name, o)| {
            let v = json!({
                "user_requests_per_minute": o.user_requests_per_minute,
                "tokens_per_minute": o.tokens_per_minute,
                "max_concurrent_streams": o.max_concurrent_streams,
                "models": o.models.as_ref().map(|m| m.patterns()),
            });
            (name.clone(), v)
        })
        .collect();
    Value::Object(entries)
}
