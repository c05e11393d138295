//! `GET /admin/api/orgs[/{org}]`: each org's quota standing (used this period against its soft
//! and hard limits, and when the period resets) and this process's counters for it.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::api::Caller;
use crate::errors::GatewayError;
use crate::policy::Period;
use crate::quota::period::{now_s, period_of, rfc3339};
use crate::state::AppState;

/// Every org the caller may see: for an operator, those the policy files name, those that
/// made requests and their own; for an org admin, their own.
pub async fn list(state: &AppState, caller: &Caller) -> Value {
    let names: BTreeSet<String> = match caller.operator {
        true => {
            let policy = state.policies.current();
            policy
                .orgs
                .keys()
                .cloned()
                .chain(state.activity.orgs.orgs())
                .chain([caller.id.org.clone()])
                .collect()
        }
        false => BTreeSet::from([caller.id.org.clone()]),
    };
    let orgs = futures::future::join_all(names.iter().map(|org| usage(state, org))).await;
    json!({ "orgs": orgs })
}

/// One org; another org than the caller's is a 404 for an org admin, as an unknown one is.
pub async fn one(state: &AppState, caller: &Caller, org: &str) -> Result<Value, GatewayError> {
    let known = state.policies.current().orgs.contains_key(org)
        || state.activity.orgs.get(org).is_some()
        || caller.id.org == org;
    if !caller.sees(org) || !known {
        return Err(GatewayError::not_found(format!("org \"{org}\" not found")));
    }
    Ok(usage(state, org).await)
}

async fn usage(state: &AppState, org: &str) -> Value {
    let policy = state.policies.current();
    let quota = policy.org(org).quota.clone();
    let (key, start, end) = period_of(quota.period, now_s());
    let used = state.quota_store.used(org, &key, start).await;
    let counts = state.activity.orgs.get(org).unwrap_or_default();
    let mut by_model: Vec<Value> = counts
        .models
        .iter()
        .map(|(model, c)| {
            json!({
                "model": model,
                "requests": c.requests,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
            })
        })
        .collect();
    by_model.sort_by_key(|m| std::cmp::Reverse(tokens(m)));
    json!({
        "org": org,
        "period": match quota.period { Period::Month => "month", Period::Day => "day" },
        "period_key": key,
        "period_start": rfc3339(start),
        "resets_at": rfc3339(end),
        "used": used,
        "soft_tokens": quota.soft_tokens,
        "hard_tokens": quota.hard_tokens,
        "requests": counts.requests,
        "rate_limited": counts.rate_limited,
        "quota_refused": counts.quota_refused,
        "by_model": by_model,
        "since": rfc3339(unix_s(state.activity.since)),
    })
}

fn tokens(m: &Value) -> u64 {
    let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
    n("prompt_tokens") + n("completion_tokens")
}

pub fn unix_s(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
