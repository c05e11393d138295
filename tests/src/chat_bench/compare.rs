//! One table comparing runs, each with its ratios against the `least_busy` run at the
//! same load (today's routing rule, the baseline cache-aware routing must beat).

use std::fmt::Write as _;

use super::report::{errors_text, Report};

/// The mode whose runs are the baseline.
pub const BASELINE: &str = "least_busy";

/// The comparison table of `reports`, in their order.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>5} {:>5} {:>6} | {:>6} {:>6} {:>6} {:>6}  errors",
        "run", "load", "conv/s", "ttft_p50", "ttft_p99", "fu_p50", "e2e_p99", "tok/s",
        "cache%", "loads", "hot%", "hot>1s", "xp50", "xp99", "xe2e", "xtok"
    );
    for r in reports {
        let base = reports
            .iter()
            .find(|b| b.labels.mode == BASELINE && b.labels.load == r.labels.load);
        let ratio = |f: fn(&Report) -> f64| match base {
            Some(b) if f(b) > 0.0 => format!("{:.2}", f(r) / f(b)),
            _ => "-".to_string(),
        };
        let loads: u64 = r.instances.iter().filter_map(|i| i.loads).sum();
        let _ = writeln!(
            out,
            "{:<18} {:>5} {:>7.3} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7.0} {:>6.1} {:>5} {:>5.1} {:>6.1} | {:>6} {:>6} {:>6} {:>6}  {}",
            r.labels.label,
            r.labels.load,
            r.rate,
            r.ttft_p50_ms,
            r.ttft_p99_ms,
            r.followup_ttft_p50_ms,
            r.e2e_p99_ms,
            r.tokens_per_s,
            r.cache_hit_ratio * 100.0,
            loads,
            r.hot_fraction * 100.0,
            r.hot_sustained * 100.0,
            ratio(|r| r.ttft_p50_ms),
            ratio(|r| r.ttft_p99_ms),
            ratio(|r| r.e2e_p99_ms),
            ratio(|r| r.tokens_per_s),
            errors_text(&r.errors)
        );
    }
    let _ = writeln!(
        out,
        "(times in ms; fu_p50: TTFT p50 of follow-up turns; cache%: prompt tokens served from \
         the prefix cache; loads: model loads over all instances; hot%: instance samples above \
         1.25x the pool's mean in-flight; hot>1s: those in spells longer than a second; xp50 \
         xp99 xe2e xtok: TTFT p50, TTFT p99, end-to-end p99 and tokens/s as a ratio of the \
         {BASELINE} run at the same load: below 1 is better for times, above 1 for tokens/s)"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_bench::report::Labels;

    fn run(label: &str, mode: &str, load: &str, p50: f64, tokens: f64) -> Report {
        Report {
            labels: Labels {
                label: label.to_string(),
                mode: mode.to_string(),
                load: load.to_string(),
            },
            ttft_p50_ms: p50,
            tokens_per_s: tokens,
            ..Report::default()
        }
    }

    #[test]
    fn ratios_are_against_the_baseline_at_the_same_load() {
        let reports = [
            run("least_busy", "least_busy", "70%", 200.0, 100.0),
            run("cache_aware", "cache_aware", "70%", 50.0, 120.0),
            run("cache_aware", "cache_aware", "100%", 80.0, 150.0),
        ];
        let text = table(&reports);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains(" 1.00 "), "{}", lines[1]);
        assert!(
            lines[2].contains(" 0.25 ") && lines[2].contains(" 1.20 "),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains(" -  "),
            "no baseline at 100%: {}",
            lines[3]
        );
    }
}
