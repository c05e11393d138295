//! `GET /admin/api/pool`: every instance as the gateway sees it now (health, load, models,
//! recent events), the queue, and the last 15 minutes of traffic.

use serde_json::{json, Value};

use crate::activity::series::STEP_S;
use crate::pool::events::Event;
use crate::pool::Instance;
use crate::quota::period::{now_s, rfc3339};
use crate::state::AppState;

pub fn render(state: &AppState) -> Value {
    let pool = &state.pool;
    let cap = pool.config.max_inflight_per_instance;
    let instances: Vec<Value> = pool.instances.iter().map(|i| instance(i, cap)).collect();
    let rejected: u64 = ["full", "timeout"]
        .iter()
        .map(|r| state.metrics.queue_rejections.with_label_values(&[r]).get())
        .sum();
    json!({
        "balance": pool.config.balance.as_str(),
        "queue": {
            "waiting": pool.waiting(),
            "capacity": pool.config.queue_size,
            "timeout_ms": pool.config.queue_timeout.as_millis() as u64,
            "rejected_total": rejected,
        },
        "instances": instances,
        "series": {"step_s": STEP_S, "points": state.activity.series.points(now_s())},
    })
}

fn instance(i: &Instance, cap: usize) -> Value {
    let models = i.models.load();
    let loaded: Vec<Value> = models.ps.iter().map(loaded_model).collect();
    let mut available: Vec<&str> = models.tags.iter().filter_map(name).collect();
    available.sort_unstable();
    json!({
        "url": i.url.base,
        "healthy": i.is_healthy(),
        "in_flight": i.in_flight(),
        "cap": cap,
        "loaded": loaded,
        "available": available,
        "last_check_ms_ago": i.events.since_checked_ms(),
        "events": i.events.recent().iter().map(event).collect::<Vec<_>>(),
    })
}

fn name(m: &Value) -> Option<&str> {
    m.get("name")
        .or_else(|| m.get("model"))
        .and_then(Value::as_str)
}

/// An `/api/ps` entry, reduced to what an operator reads: name, size, VRAM and expiry.
fn loaded_model(m: &Value) -> Value {
    json!({
        "name": name(m),
        "size": m.get("size"),
        "size_vram": m.get("size_vram"),
        "expires_at": m.get("expires_at"),
    })
}

fn event(e: &Event) -> Value {
    json!({"at": rfc3339(e.at), "kind": e.kind, "message": e.message})
}
