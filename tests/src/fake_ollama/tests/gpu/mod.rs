//! The simulated GPU over real HTTP: prompt caching, slot choice, queueing, batching,
//! shared prompt evaluation, model loads, eviction and keep-alive. Each test runs its
//! GPU faster with `time_scale` and asserts on what a client observes and on Ollama's
//! counters.

mod batching;
mod caching;
mod models;
mod prefill;
mod queueing;
mod sim_stats;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::super::{FakeOllama, GpuModel, GpuStats};
use super::{client, json_lines, post, read_lines};

/// One streamed `/api/chat` reply as its client saw it.
#[derive(Debug)]
pub(super) struct Reply {
    /// From sending the request to the first line.
    pub first: Duration,
    /// When the first line arrived.
    pub first_at: Instant,
    /// When the last line (the final chunk) arrived.
    pub ended: Instant,
    pub text: String,
    /// The final chunk, with Ollama's counters.
    pub done: Value,
}

impl Reply {
    pub fn count(&self, key: &str) -> u64 {
        self.done[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {}", self.done))
    }

    pub fn nanos(&self, key: &str) -> Duration {
        Duration::from_nanos(self.count(key))
    }
}

/// Streams one `/api/chat` request to its end.
pub(super) async fn chat(fake: &FakeOllama, body: Value) -> Reply {
    let sent = Instant::now();
    let response = post(fake, "/api/chat", body).await;
    assert_eq!(response.status(), 200);
    let (lines, died) = read_lines(response).await;
    assert!(!died && !lines.is_empty(), "a whole stream");
    let values = json_lines(&lines);
    let text = values
        .iter()
        .filter_map(|v| v["message"]["content"].as_str())
        .collect();
    Reply {
        first: lines[0].1 - sent,
        first_at: lines[0].1,
        ended: lines[lines.len() - 1].1,
        text,
        done: values[values.len() - 1].clone(),
    }
}

/// A conversation: a system prompt, then user and assistant turns alternating.
pub(super) fn conversation(model: &str, system: &str, turns: &[&str]) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (i, content) in turns.iter().enumerate() {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": content}));
    }
    json!({"model": model, "messages": messages})
}

/// A system prompt of about `tokens` tokens (4 bytes each), distinct per `tag`.
pub(super) fn long_system(tag: &str, tokens: usize) -> String {
    let sentence = format!("You are assistant {tag}. ");
    sentence.repeat(tokens * 4 / sentence.len() + 1)
}

pub(super) async fn ps_names(fake: &FakeOllama) -> Vec<String> {
    let ps: Value = client()
        .get(format!("{}/api/ps", fake.url()))
        .send()
        .await
        .expect("ps")
        .json()
        .await
        .expect("json");
    ps["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_string())
        .collect()
}

pub(super) fn stats(fake: &FakeOllama) -> GpuStats {
    fake.gpu_stats().expect("built with a GPU")
}

/// Polls the GPU's counters until `ready` holds (a stream started, a request queued);
/// panics after two seconds.
pub(super) async fn until(fake: &FakeOllama, what: &str, ready: impl Fn(&GpuStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !ready(&stats(fake)) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A GPU with the given knobs and the rest at their defaults.
pub(super) fn gpu(time_scale: f64) -> GpuModel {
    GpuModel {
        time_scale,
        ..GpuModel::default()
    }
}
