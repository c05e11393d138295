//! The figures of one run, as JSON for scripts and as a short table for people.
//!
//! Latencies are taken from every successful turn (a retried turn counts its successful
//! attempt); errors count every failed attempt by status. The prefix-cache hit ratio is
//! `1 − evaluated / total` prompt tokens over successful turns, where `evaluated` is the
//! instance's `prompt_eval_count` and `total` the same prompt counted by the simulator's
//! own renderer ([`crate::fake_ollama::gpu::chat_prompt_tokens`]), so it is exact.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::drive::RunRecord;
use super::instances::{instance_reports, InstanceReport, HOT_FACTOR, MOMENT};
use super::turn::Outcome;
use crate::fake_ollama::SimStats;

/// How the run was labelled on the command line, for the comparison table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Labels {
    /// Row name, e.g. `cache_aware` or `cache_aware+2gw`.
    pub label: String,
    /// The gateway's balance mode; `least_busy` rows are the baseline of comparisons.
    pub mode: String,
    /// Load level, e.g. `70%`: rows are compared with the baseline of the same load.
    pub load: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub labels: Labels,
    /// Conversations started per second (0: all at once, closed loop).
    pub rate: f64,
    pub concurrency: Option<usize>,
    pub conversations: usize,
    pub abandoned: usize,
    pub mean_turns: f64,
    pub turns_ok: usize,
    pub attempts: usize,
    pub wall_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    /// The same over turns after the first: the ones a prompt cache can speed up.
    pub followup_ttft_p50_ms: f64,
    pub followup_ttft_p99_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    pub completion_tokens: u64,
    /// Completion tokens per second of wall time.
    pub tokens_per_s: f64,
    pub turns_per_s: f64,
    /// In a closed loop: successful turns per second while every slot of the loop was
    /// taken (until the last conversation started), the pool's capacity in turns.
    pub saturated_turns_per_s: Option<f64>,
    /// That capacity in conversations per second of this workload.
    pub capacity_conversations_per_s: Option<f64>,
    pub prompt_tokens: u64,
    pub evaluated_tokens: u64,
    pub cache_hit_ratio: f64,
    /// Failed attempts by status (`503`, `transport`, `cut`, `stream_error`, ...).
    pub errors: BTreeMap<String, u64>,
    pub instances: Vec<InstanceReport>,
    /// Share of instance samples that were hot, over the whole pool.
    pub hot_fraction: f64,
    /// Share of instance samples in hot spells longer than a moment (see `instances`).
    #[serde(default)]
    pub hot_sustained: f64,
}

/// What [`Report::build`] needs besides the run itself.
pub struct RunContext<'a> {
    pub labels: Labels,
    pub rate: f64,
    pub concurrency: Option<usize>,
    pub conversations: usize,
    pub mean_turns: f64,
    pub instances: &'a [String],
    pub before: &'a [Option<SimStats>],
    pub after: &'a [Option<SimStats>],
    pub samples: &'a [Vec<Option<usize>>],
}

impl Report {
    pub fn build(run: &RunRecord, context: &RunContext<'_>) -> Self {
        let ok: Vec<_> = run
            .turns
            .iter()
            .filter(|t| t.outcome == Outcome::Done)
            .collect();
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        let ttft: Vec<f64> = ok.iter().filter_map(|t| t.ttft).map(ms).collect();
        let followup: Vec<f64> = ok
            .iter()
            .filter(|t| t.turn > 0)
            .filter_map(|t| t.ttft)
            .map(ms)
            .collect();
        let e2e: Vec<f64> = ok.iter().map(|t| ms(t.total)).collect();
        let mut errors = BTreeMap::new();
        for t in run.turns.iter().filter(|t| t.outcome != Outcome::Done) {
            *errors.entry(t.outcome.label()).or_insert(0) += 1;
        }
        let prompt_tokens: u64 = ok.iter().map(|t| t.prompt_tokens as u64).sum();
        let evaluated_tokens: u64 = ok.iter().map(|t| t.evaluated_tokens).sum();
        let completion_tokens: u64 = ok.iter().map(|t| t.completion_tokens).sum();
        let wall_s = run.wall.as_secs_f64().max(1e-9);
        let saturated = context.concurrency.map(|_| saturated_rate(run));
        let (instances, hot) = instance_reports(
            context.instances,
            context.before,
            context.after,
            context.samples,
        );
        Self {
            labels: context.labels.clone(),
            rate: context.rate,
            concurrency: context.concurrency,
            conversations: context.conversations,
            abandoned: run.abandoned,
            mean_turns: context.mean_turns,
            turns_ok: ok.len(),
            attempts: run.turns.len(),
            wall_s,
            ttft_p50_ms: quantile(&ttft, 0.50),
            ttft_p99_ms: quantile(&ttft, 0.99),
            followup_ttft_p50_ms: quantile(&followup, 0.50),
            followup_ttft_p99_ms: quantile(&followup, 0.99),
            e2e_p50_ms: quantile(&e2e, 0.50),
            e2e_p99_ms: quantile(&e2e, 0.99),
            completion_tokens,
            tokens_per_s: completion_tokens as f64 / wall_s,
            turns_per_s: ok.len() as f64 / wall_s,
            saturated_turns_per_s: saturated,
            capacity_conversations_per_s: saturated.map(|t| t / context.mean_turns.max(1e-9)),
            prompt_tokens,
            evaluated_tokens,
            cache_hit_ratio: if prompt_tokens == 0 {
                0.0
            } else {
                1.0 - evaluated_tokens as f64 / prompt_tokens as f64
            },
            errors,
            instances,
            hot_fraction: hot.fraction,
            hot_sustained: hot.sustained,
        }
    }

    /// The human summary of this run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let l = &self.labels;
        let _ = writeln!(
            out,
            "{} (mode {}, load {}): {} conversations, {} turns ok of {} sent, {} abandoned, {:.1} s",
            l.label, l.mode, l.load, self.conversations, self.turns_ok, self.attempts,
            self.abandoned, self.wall_s
        );
        let arrivals = if self.rate > 0.0 {
            format!("{:.2} conversations/s (Poisson)", self.rate)
        } else {
            "all at once".to_string()
        };
        let cap = self
            .concurrency
            .map_or(String::new(), |c| format!(", at most {c} at once"));
        let _ = writeln!(out, "  arrivals              {arrivals}{cap}");
        let _ = writeln!(
            out,
            "  TTFT p50 / p99        {:.1} / {:.1} ms (follow-up turns {:.1} / {:.1} ms)",
            self.ttft_p50_ms,
            self.ttft_p99_ms,
            self.followup_ttft_p50_ms,
            self.followup_ttft_p99_ms
        );
        let _ = writeln!(
            out,
            "  end-to-end p50 / p99  {:.1} / {:.1} ms",
            self.e2e_p50_ms, self.e2e_p99_ms
        );
        let _ = writeln!(
            out,
            "  throughput            {:.0} completion tokens/s, {:.2} turns/s",
            self.tokens_per_s, self.turns_per_s
        );
        if let (Some(turns), Some(conversations)) = (
            self.saturated_turns_per_s,
            self.capacity_conversations_per_s,
        ) {
            let _ = writeln!(
                out,
                "  capacity (saturated)  {turns:.2} turns/s = {conversations:.3} conversations/s"
            );
        }
        let _ = writeln!(
            out,
            "  prefix-cache hits     {:.1}% ({} of {} prompt tokens evaluated)",
            self.cache_hit_ratio * 100.0,
            self.evaluated_tokens,
            self.prompt_tokens
        );
        let _ = writeln!(out, "  errors                {}", errors_text(&self.errors));
        let _ = writeln!(
            out,
            "  {:<28} {:>6} {:>6} {:>11} {:>8} {:>7} {:>6} {:>11}",
            "instance", "loads", "evict", "hits/prompt", "mean_if", "max_if", "hot%", "longest_hot"
        );
        for i in &self.instances {
            let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            let hits = format!("{}/{}", n(i.cache_hits), n(i.prompts));
            let _ = writeln!(
                out,
                "  {:<28} {:>6} {:>6} {:>11} {:>8.2} {:>7} {:>5.1}% {:>8} ms",
                i.url,
                n(i.loads),
                n(i.evictions),
                hits,
                i.mean_in_flight,
                i.max_in_flight,
                i.hot_fraction * 100.0,
                i.longest_hot_ms
            );
        }
        if !self.instances.is_empty() {
            let _ = writeln!(
                out,
                "  hot: in-flight above {HOT_FACTOR}x the pool mean in {:.1}% of instance samples, \
                 {:.1}% in spells longer than {} ms",
                self.hot_fraction * 100.0,
                self.hot_sustained * 100.0,
                MOMENT.as_millis()
            );
        }
        out
    }

    /// One `key=value` line, like corral-bench's, for scripts that grep.
    pub fn line(&self) -> String {
        let capacity = self
            .capacity_conversations_per_s
            .map_or(String::new(), |c| format!(" capacity_conv_per_s={c:.4}"));
        format!(
            "result label={} ttft_p50_ms={:.1} ttft_p99_ms={:.1} e2e_p99_ms={:.1} tokens_per_s={:.0} cache_hit_ratio={:.3} errors={}{capacity}",
            self.labels.label,
            self.ttft_p50_ms,
            self.ttft_p99_ms,
            self.e2e_p99_ms,
            self.tokens_per_s,
            self.cache_hit_ratio,
            self.errors.values().sum::<u64>()
        )
    }
}

/// `none`, or `503: 3, transport: 1`.
pub fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".to_string();
    }
    let parts: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    parts.join(", ")
}

/// The `q` quantile by nearest rank; 0 for no values.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Successful turns per second until the last conversation started (while the closed
/// loop was full); the whole run when they all started at once.
fn saturated_rate(run: &RunRecord) -> f64 {
    let window = if run.last_start > run.wall / 4 {
        run.last_start
    } else {
        run.wall
    };
    let done = run
        .turns
        .iter()
        .filter(|t| t.outcome == Outcome::Done && t.ended <= window)
        .count();
    done as f64 / window.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
