//! A multi-turn chat benchmark: the workload cache-aware routing is for (issue 12).
//!
//! Conversations arrive as a Poisson process; each sends 4-12 turns one after another,
//! every turn resending the whole history (a shared system prompt, the user's messages
//! and the assistant's replies as returned) as a streaming `/api/chat`. Against the fake
//! Ollama's simulated GPU (`fake-ollama --gpu`), a turn that lands where its history is
//! cached evaluates only its new tokens and starts sooner; one that lands elsewhere pays
//! for the whole history again. The run measures what users feel (time to first token,
//! end-to-end time), what the pool got done (tokens/s, prefix-cache hit ratio) and, from
//! each instance's `/sim/stats`, model loads and how evenly load spread.
//!
//! The `corral-chat-bench` binary wraps [`run`]; `bench/routing.sh` runs it against each
//! balance mode of the gateway.

pub mod compare;
pub mod drive;
pub mod instances;
pub mod report;
pub mod sample;
pub mod turn;
pub mod workload;

use drive::{drive, DriveOptions};
use report::{Labels, Report, RunContext};
use sample::{snapshots, Sampler};
use workload::{Workload, WorkloadSpec};

/// One run: the workload, how to send it, and which instances to watch.
#[derive(Debug, Clone)]
pub struct BenchRun {
    pub spec: WorkloadSpec,
    /// `bytes_per_token` is taken from the first instance that reports one, else from
    /// the spec.
    pub drive: DriveOptions,
    /// Base URLs of the fake instances behind the gateway (their `/sim/stats`).
    pub instances: Vec<String>,
    pub labels: Labels,
}

/// Runs the workload and builds its report.
pub async fn run(mut bench: BenchRun) -> Report {
    let client = reqwest::Client::new();
    let before = snapshots(&client, &bench.instances).await;
    if let Some(bytes) = before.iter().flatten().find_map(|s| s.bytes_per_token) {
        bench.spec.bytes_per_token = bytes;
    }
    bench.drive.bytes_per_token = bench.spec.bytes_per_token;
    let workload = Workload::generate(&bench.spec);
    let sampler = Sampler::start(client.clone(), bench.instances.clone());
    let record = drive(&workload, &bench.drive).await;
    let samples = sampler.finish().await;
    let after = snapshots(&client, &bench.instances).await;
    Report::build(
        &record,
        &RunContext {
            labels: bench.labels,
            rate: bench.spec.rate,
            concurrency: bench.drive.concurrency,
            conversations: workload.conversations.len(),
            mean_turns: workload.mean_turns(),
            instances: &bench.instances,
            before: &before,
            after: &after,
            samples: &samples,
        },
    )
}
