//! The last 15 minutes of traffic in 10-second steps (requests, 5xx answers, time to first
//! token), for the console's charts. Prometheus keeps the long history; this is what a page
//! can draw without one.

use std::sync::Mutex;

/// Seconds per step.
pub const STEP_S: i64 = 10;
/// Steps kept: 15 minutes.
pub const STEPS: usize = 90;
/// Upper bounds (ms) of the time-to-first-token buckets; the last bucket is open.
const TTFT_MS: [f64; 22] = [
    5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0,
    2000.0, 3000.0, 5000.0, 7500.0, 10000.0, 20000.0, 30000.0, 60000.0,
];

#[derive(Clone, Copy, Default)]
struct Step {
    /// Which step this is (unix seconds / STEP_S); a slot holding an older one is stale.
    id: i64,
    requests: u64,
    errors: u64,
    ttft: [u32; TTFT_MS.len() + 1],
}

/// One point of the series.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Point {
    /// Start of the step, unix seconds.
    pub t: i64,
    pub requests: u64,
    pub errors: u64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
}

pub struct Series {
    steps: Mutex<[Step; STEPS]>,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            steps: Mutex::new([Step::default(); STEPS]),
        }
    }
}

impl Series {
    /// Counts one answered request at `now_s`. Cost: one short lock (no allocation).
    pub fn record(&self, now_s: i64, error: bool, ttft_ms: Option<f64>) {
        let id = now_s.div_euclid(STEP_S);
        let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        let step = &mut steps[id.rem_euclid(STEPS as i64) as usize];
        if step.id != id {
            *step = Step {
                id,
                ..Step::default()
            };
        }
        step.requests += 1;
        step.errors += u64::from(error);
        if let Some(ms) = ttft_ms {
            let bucket = TTFT_MS
                .iter()
                .position(|b| ms <= *b)
                .unwrap_or(TTFT_MS.len());
            step.ttft[bucket] += 1;
        }
    }

    /// The last STEPS steps up to `now_s`, oldest first (steps with no traffic are zeros).
    pub fn points(&self, now_s: i64) -> Vec<Point> {
        let now_id = now_s.div_euclid(STEP_S);
        let steps = *self.steps.lock().unwrap_or_else(|p| p.into_inner());
        (now_id - STEPS as i64 + 1..=now_id)
            .map(|id| {
                let s = steps[id.rem_euclid(STEPS as i64) as usize];
                let s = if s.id == id { s } else { Step::default() };
                Point {
                    t: id * STEP_S,
                    requests: s.requests,
                    errors: s.errors,
                    ttft_p50_ms: quantile(&s.ttft, 0.5),
                    ttft_p99_ms: quantile(&s.ttft, 0.99),
                }
            })
            .collect()
    }
}

/// The q-quantile of a bucketed count, interpolated inside its bucket (as Prometheus'
/// `histogram_quantile` does); the open last bucket answers its lower bound.
fn quantile(buckets: &[u32], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0.0;
    for (i, count) in buckets.iter().enumerate() {
        let count = f64::from(*count);
        if count > 0.0 && seen + count >= rank {
            let lower = if i == 0 { 0.0 } else { TTFT_MS[i - 1] };
            let Some(upper) = TTFT_MS.get(i) else {
                return Some(lower);
            };
            return Some(lower + (upper - lower) * ((rank - seen) / count).clamp(0.0, 1.0));
        }
        seen += count;
    }
    TTFT_MS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_step_and_old_steps_are_forgotten() {
        let s = Series::default();
        s.record(1000, false, Some(40.0));
        s.record(1005, true, None);
        s.record(1010, false, Some(400.0));
        let points = s.points(1010);
        assert_eq!(points.len(), STEPS);
        let last = &points[STEPS - 1];
        assert_eq!((last.t, last.requests, last.errors), (1010, 1, 0));
        let before = &points[STEPS - 2];
        assert_eq!((before.t, before.requests, before.errors), (1000, 2, 1));
        assert!(before.ttft_p50_ms.is_some_and(|v| v > 35.0 && v <= 50.0));
        // Fifteen minutes on, the same slots hold nothing of the old steps.
        let later = s.points(1010 + STEP_S * STEPS as i64);
        assert!(later.iter().all(|p| p.requests == 0));
    }

    #[test]
    fn quantiles_follow_the_distribution() {
        let mut b = [0u32; TTFT_MS.len() + 1];
        b[6] = 99; // 75..100 ms
        b[12] = 1; // 750..1000 ms
        let p50 = quantile(&b, 0.5).unwrap();
        assert!((75.0..=100.0).contains(&p50), "{p50}");
        let p99 = quantile(&b, 0.99).unwrap();
        assert!(p99 <= 100.0, "{p99}");
        assert_eq!(quantile(&[0; 3], 0.5), None);
    }
}
