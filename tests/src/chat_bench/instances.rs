//! What each simulated instance did during a run, and how evenly the load spread.
//!
//! Counters come from `/sim/stats` before and after the run (so a reused instance's
//! history does not count); in-flight figures from the samples taken every 50 ms. An
//! instance is *hot* in a sample when it has more than [`HOT_FACTOR`] times the pool's
//! mean in-flight of that sample: routing that follows caches must not do that often, nor
//! for more than a moment. With about one request per instance a single extra request is
//! already twice the mean, so the share of hot samples is coarse; what the issue's "for more
//! than a moment" asks is read from how long each hot spell lasts: the share of hot samples
//! in spells longer than [`MOMENT`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sample::SAMPLE_EVERY;

use crate::fake_ollama::SimStats;

/// An instance counts as hot in a sample when its in-flight count is above this multiple
/// of the pool's mean in that sample.
pub const HOT_FACTOR: f64 = 1.25;

/// A hot spell longer than this (consecutive hot samples of one instance, in wall time) is
/// more than a moment: about one request's time on the simulated GPU at the bench's scale.
pub const MOMENT: Duration = Duration::from_secs(1);

/// How hot the pool ran: shares of all instance samples with any load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Hot {
    /// Samples in which the instance was hot.
    pub fraction: f64,
    /// Samples in hot spells longer than [`MOMENT`].
    pub sustained: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstanceReport {
    pub url: String,
    /// Counters over the run (end minus start); absent when the instance did not answer.
    pub requests: Option<u64>,
    pub loads: Option<u64>,
    pub evictions: Option<u64>,
    pub prompts: Option<u64>,
    pub cache_hits: Option<u64>,
    pub rejected: Option<u64>,
    /// Mean and highest in-flight count over the samples.
    pub mean_in_flight: f64,
    pub max_in_flight: usize,
    /// Share of the samples with any load in which this instance was hot.
    pub hot_fraction: f64,
    /// Its longest hot spell, in ms of wall time.
    #[serde(default)]
    pub longest_hot_ms: u64,
}

/// One report per instance, and how hot the pool ran. `samples` has one row per tick
/// ([`SAMPLE_EVERY`] apart), one column per instance (`None`: no answer).
pub fn instance_reports(
    urls: &[String],
    before: &[Option<SimStats>],
    after: &[Option<SimStats>],
    samples: &[Vec<Option<usize>>],
) -> (Vec<InstanceReport>, Hot) {
    let n = urls.len();
    let mut reports: Vec<InstanceReport> = (0..n)
        .map(|i| counters(&urls[i], before.get(i), after.get(i)))
        .collect();
    let mut seen = vec![0usize; n];
    let mut sum = vec![0usize; n];
    let mut hot = vec![0usize; n];
    let mut spells = vec![Spells::default(); n];
    let mut rows_with_load = 0usize;
    for row in samples {
        let answered: Vec<usize> = row.iter().flatten().copied().collect();
        if answered.is_empty() {
            continue;
        }
        let mean = answered.iter().sum::<usize>() as f64 / answered.len() as f64;
        rows_with_load += usize::from(mean > 0.0);
        for (i, value) in row.iter().enumerate().take(n) {
            let Some(value) = *value else { continue };
            seen[i] += 1;
            sum[i] += value;
            reports[i].max_in_flight = reports[i].max_in_flight.max(value);
            let is_hot = mean > 0.0 && value as f64 > HOT_FACTOR * mean;
            hot[i] += usize::from(is_hot);
            spells[i].sample(is_hot);
        }
    }
    for s in &mut spells {
        s.sample(false);
    }
    let samples_of = |c: usize| c.max(1) as f64;
    let all = samples_of(rows_with_load * n);
    for (i, report) in reports.iter_mut().enumerate() {
        report.mean_in_flight = sum[i] as f64 / seen[i].max(1) as f64;
        report.hot_fraction = hot[i] as f64 / samples_of(rows_with_load);
        report.longest_hot_ms = spells[i].longest as u64 * SAMPLE_EVERY.as_millis() as u64;
    }
    let hot = Hot {
        fraction: hot.iter().sum::<usize>() as f64 / all,
        sustained: spells.iter().map(|s| s.sustained).sum::<usize>() as f64 / all,
    };
    (reports, hot)
}

/// One instance's hot spells as the samples come.
#[derive(Debug, Clone, Copy, Default)]
struct Spells {
    current: usize,
    longest: usize,
    /// Samples in spells longer than [`MOMENT`].
    sustained: usize,
}

impl Spells {
    fn sample(&mut self, hot: bool) {
        if hot {
            self.current += 1;
            return;
        }
        let moment = (MOMENT.as_millis() / SAMPLE_EVERY.as_millis()) as usize;
        if self.current > moment {
            self.sustained += self.current;
        }
        self.longest = self.longest.max(self.current);
        self.current = 0;
    }
}

fn counters(
    url: &str,
    before: Option<&Option<SimStats>>,
    after: Option<&Option<SimStats>>,
) -> InstanceReport {
    let before = before.cloned().flatten().unwrap_or_default();
    let mut report = InstanceReport {
        url: url.to_string(),
        ..InstanceReport::default()
    };
    let Some(after) = after.cloned().flatten() else {
        return report;
    };
    report.requests = Some(after.requests.saturating_sub(before.requests) as u64);
    if let Some(gpu) = after.gpu {
        let was = before.gpu.unwrap_or_default();
        report.loads = Some(gpu.loads.saturating_sub(was.loads));
        report.evictions = Some(gpu.evictions.saturating_sub(was.evictions));
        report.prompts = Some(gpu.prompts.saturating_sub(was.prompts));
        report.cache_hits = Some(gpu.cache_hits.saturating_sub(was.cache_hits));
        report.rejected = Some(gpu.rejected.saturating_sub(was.rejected));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_ollama::GpuStats;

    #[test]
    fn an_instance_above_the_pool_mean_is_hot() {
        let urls = ["a".to_string(), "b".to_string()];
        let samples = vec![
            vec![Some(4), Some(0)],
            vec![Some(2), Some(2)],
            vec![Some(0), Some(0)],
            vec![Some(3), None],
        ];
        let (reports, pool) = instance_reports(&urls, &[], &[], &samples);
        assert_eq!(reports[0].max_in_flight, 4);
        assert!((reports[0].mean_in_flight - 9.0 / 4.0).abs() < 1e-9);
        assert!((reports[1].mean_in_flight - 2.0 / 3.0).abs() < 1e-9);
        // Rows with load: 3; a is hot in the first only (3 alone is its own mean).
        assert!((reports[0].hot_fraction - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(reports[1].hot_fraction, 0.0);
        assert!((pool.fraction - 1.0 / 6.0).abs() < 1e-9);
        assert_eq!(pool.sustained, 0.0, "one sample is a moment");
        assert_eq!(reports[0].longest_hot_ms, SAMPLE_EVERY.as_millis() as u64);
        assert_eq!(reports[0].loads, None, "no counters without /sim/stats");
    }

    #[test]
    fn only_spells_longer_than_a_moment_are_sustained() {
        let urls = ["a".to_string(), "b".to_string()];
        let moment = (MOMENT.as_millis() / SAMPLE_EVERY.as_millis()) as usize;
        // a is hot for one sample more than a moment, then b for exactly a moment.
        let mut samples = vec![vec![Some(3), Some(1)]; moment + 1];
        samples.push(vec![Some(1), Some(1)]);
        samples.extend(vec![vec![Some(1), Some(3)]; moment]);
        let (reports, pool) = instance_reports(&urls, &[], &[], &samples);
        let rows = (2 * moment + 2) as f64;
        assert!((pool.sustained - (moment + 1) as f64 / (2.0 * rows)).abs() < 1e-9);
        assert!((pool.fraction - (2 * moment + 1) as f64 / (2.0 * rows)).abs() < 1e-9);
        let ms = |n: usize| n as u64 * SAMPLE_EVERY.as_millis() as u64;
        assert_eq!(
            (reports[0].longest_hot_ms, reports[1].longest_hot_ms),
            (ms(moment + 1), ms(moment))
        );
    }

    #[test]
    fn counters_are_what_changed_during_the_run() {
        let stats = |loads, requests| SimStats {
            requests,
            gpu: Some(GpuStats {
                loads,
                ..GpuStats::default()
            }),
            ..SimStats::default()
        };
        let (reports, _) = instance_reports(
            &["a".to_string()],
            &[Some(stats(2, 10))],
            &[Some(stats(5, 30))],
            &[],
        );
        assert_eq!((reports[0].loads, reports[0].requests), (Some(3), Some(20)));
    }
}
