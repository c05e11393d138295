//! GCRA (generic cell rate algorithm), the rate limiter's one decision rule.
//!
//! Written once as a pure function so that the in-memory limiter and the Redis script
//! (`redis.lua`, the same arithmetic) decide identically, and so the `RateLimit` header
//! fields (remaining, reset) fall out of the same numbers. State per key is one number: the
//! theoretical arrival time (TAT) of the next request, in milliseconds.

/// A rate: `interval_ms` per unit, with `tolerance_ms` of burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub interval_ms: f64,
    pub tolerance_ms: f64,
}

impl Rule {
    /// `per_minute` units a minute, `burst` of them allowed above the rate at once.
    pub fn per_minute(per_minute: u64, burst: u64) -> Rule {
        let interval_ms = 60_000.0 / per_minute.max(1) as f64;
        Rule {
            interval_ms,
            tolerance_ms: interval_ms * burst as f64,
        }
    }
}

/// How a cost is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Allowed only when within the rate; then charged.
    Admit,
    /// Always charged (tokens counted after the response, whatever the balance).
    Charge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// The TAT to store when the whole set of checks is allowed.
    pub new_tat_ms: f64,
    /// Units still available at once.
    pub remaining: u64,
    /// Milliseconds until the full burst is available again.
    pub reset_ms: u64,
    /// Milliseconds until this request would have been allowed (0 when allowed).
    pub retry_after_ms: u64,
}

/// Decides one request of `cost` units at `now_ms`, given the key's stored TAT.
pub fn decide(
    stored_tat_ms: Option<f64>,
    now_ms: f64,
    rule: Rule,
    cost: f64,
    mode: Mode,
) -> Decision {
    let tat = stored_tat_ms.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat + rule.interval_ms * cost;
    let limit = rule.tolerance_ms + rule.interval_ms;
    let allowed = mode == Mode::Charge || new_tat - now_ms <= limit;
    let (tat_after, retry_after) = if allowed {
        (new_tat, 0.0)
    } else {
        (tat, new_tat - limit - now_ms)
    };
    let headroom = (limit - (tat_after - now_ms)).max(0.0);
    Decision {
        allowed,
        new_tat_ms: tat_after,
        remaining: (headroom / rule.interval_ms).floor() as u64,
        reset_ms: (tat_after - now_ms).max(0.0).ceil() as u64,
        retry_after_ms: retry_after.max(0.0).ceil() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_the_rate() {
        let rule = Rule::per_minute(60, 4); // one a second, four extra at once
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..10 {
            let d = decide(tat, 0.0, rule, 1.0, Mode::Admit);
            if d.allowed {
                allowed += 1;
                tat = Some(d.new_tat_ms);
            }
        }
        assert_eq!(allowed, 5, "burst of four plus one");
        let refused = decide(tat, 0.0, rule, 1.0, Mode::Admit);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 1000);
        assert_eq!(refused.remaining, 0);
        let later = decide(tat, 1000.0, rule, 1.0, Mode::Admit);
        assert!(later.allowed, "one more a second later");
    }

    #[test]
    fn remaining_counts_down() {
        let rule = Rule::per_minute(600, 9);
        let first = decide(None, 0.0, rule, 1.0, Mode::Admit);
        assert_eq!(first.remaining, 9);
        let second = decide(Some(first.new_tat_ms), 0.0, rule, 1.0, Mode::Admit);
        assert_eq!(second.remaining, 8);
        assert_eq!(second.reset_ms, 200);
    }

    #[test]
    fn charges_always_and_then_refuses() {
        let rule = Rule::per_minute(100, 100); // a minute's worth of tokens at once
        let spent = decide(None, 0.0, rule, 500.0, Mode::Charge);
        assert!(spent.allowed);
        let next = decide(Some(spent.new_tat_ms), 0.0, rule, 0.0, Mode::Admit);
        assert!(!next.allowed, "in debt past the tolerance");
        assert!(next.retry_after_ms > 0);
    }
}
