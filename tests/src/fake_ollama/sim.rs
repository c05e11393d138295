//! `GET /sim/stats`: what the instance is doing, for benchmarks that run the fake as a
//! process and cannot call [`super::FakeOllama::gpu_stats`].
//!
//! Not part of Ollama's API: the gateway never sends it, a benchmark asks each instance
//! directly (every 50 ms while it runs, to see how load spreads over the pool).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::gpu::GpuStats;
use super::request::json_response;
use super::state::Shared;

/// The body of `GET /sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Generations being answered right now, waiting for a slot or model included.
    pub in_flight: usize,
    /// The most ever in flight at once.
    pub max_in_flight: usize,
    /// Model requests received (see [`super::FakeOllama::requests`]).
    pub requests: usize,
    /// Bytes of rendered prompt per simulated token; `None` without a simulated GPU.
    pub bytes_per_token: Option<usize>,
    /// The simulated GPU's counters; `None` without one.
    pub gpu: Option<GpuStats>,
}

pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let gpu = shared.gpu.as_ref();
    let body = SimStats {
        in_flight: shared.in_flight(),
        max_in_flight: shared.max_in_flight(),
        requests: shared.requests(),
        bytes_per_token: gpu.map(|g| g.bytes_per_token()),
        gpu: gpu.map(|g| g.stats()),
    };
    json_response(StatusCode::OK, &body)
}
