//! The conversations a benchmark run sends, decided up front from a seed.
//!
//! Every run of one spec sends the same conversations, in the same order, at the same
//! offsets, so runs against different routing modes differ only in the routing. What a
//! conversation does not know in advance is its assistant replies: each turn resends the
//! whole history with the replies as the gateway returned them (see `drive`).

use std::time::Duration;

/// Words the generated text is made of: content only has to have a realistic size and be
/// different in each conversation, since the simulator caches bytes, not meaning.
const WORDS: &[&str] = &[
    "the", "model", "cache", "prompt", "token", "server", "request", "gateway", "answer",
    "question", "why", "how", "does", "this", "work", "when", "GPU", "memory", "slot", "turn",
    "history", "routing", "latency", "user", "system", "reply", "load", "pool", "instance",
    "stream", "chunk", "time", "first", "again", "please", "explain", "detail", "example", "code",
    "function", "error", "config", "value", "and", "or", "not", "with", "for", "in", "of", "to",
    "a", "is", "it", "we", "they", "can", "should", "would", "more", "less", "fast", "slow",
    "cheap",
];

/// What to generate; the defaults are those of a realistic chat workload (issue 12).
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub conversations: usize,
    /// Turns per conversation, uniform in this inclusive range.
    pub turns: (usize, usize),
    /// Tokens of the system prompt every conversation shares.
    pub system_tokens: usize,
    /// Tokens of each user message, uniform in this inclusive range.
    pub user_tokens: (usize, usize),
    /// Completion tokens asked for (`options.num_predict`), uniform in this range.
    pub reply_tokens: (usize, usize),
    /// Bytes of text per token, as the simulator counts them.
    pub bytes_per_token: usize,
    /// Conversations are spread over these models in turn.
    pub models: Vec<String>,
    /// Conversations started per second on average (Poisson arrivals); 0 starts them all
    /// at once (for a closed loop bounded by a concurrency limit).
    pub rate: f64,
    /// Mean pause between a reply and the next turn (exponentially distributed).
    pub think: Duration,
    pub seed: u64,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            conversations: 300,
            turns: (4, 12),
            system_tokens: 300,
            user_tokens: (50, 400),
            reply_tokens: (50, 250),
            bytes_per_token: 4,
            models: vec!["llama3.2:3b".to_string(), "qwen2.5:7b".to_string()],
            rate: 1.0,
            think: Duration::from_millis(500),
            seed: 1,
        }
    }
}

/// One turn to send: the user's message, the reply length asked for, and the pause
/// before it (zero for the first turn).
#[derive(Debug, Clone, PartialEq)]
pub struct TurnPlan {
    pub user: String,
    pub num_predict: usize,
    pub think: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub index: usize,
    /// Unique within the run; sent as `X-Corral-Session` when asked.
    pub id: String,
    pub model: String,
    /// When it starts, from the beginning of the run.
    pub start: Duration,
    pub turns: Vec<TurnPlan>,
}

/// The whole run: the shared system prompt and the conversations in start order.
#[derive(Debug, Clone)]
pub struct Workload {
    pub system: String,
    pub conversations: Vec<Conversation>,
}

impl Workload {
    pub fn generate(spec: &WorkloadSpec) -> Self {
        let mut rng = Rng::new(spec.seed);
        let bytes = spec.bytes_per_token.max(1);
        let system = format!(
            "You are a helpful assistant for the Corral benchmark. {}",
            rng.text(spec.system_tokens * bytes)
        );
        let mut start = Duration::ZERO;
        let conversations = (0..spec.conversations)
            .map(|index| {
                if spec.rate > 0.0 && index > 0 {
                    start += Duration::from_secs_f64(rng.exponential(1.0 / spec.rate));
                }
                let turns = rng.between(spec.turns.0, spec.turns.1);
                let id = format!("c{}-{index:04}", spec.seed);
                let turns = (0..turns)
                    .map(|turn| {
                        let size = rng.between(spec.user_tokens.0, spec.user_tokens.1) * bytes;
                        let opening = if turn == 0 {
                            format!("[{id}] ")
                        } else {
                            String::new()
                        };
                        TurnPlan {
                            user: format!("{opening}{}", rng.text(size)),
                            num_predict: rng.between(spec.reply_tokens.0, spec.reply_tokens.1),
                            think: if turn == 0 {
                                Duration::ZERO
                            } else {
                                Duration::from_secs_f64(rng.exponential(spec.think.as_secs_f64()))
                            },
                        }
                    })
                    .collect();
                Conversation {
                    index,
                    id,
                    model: spec.models[index % spec.models.len().max(1)].clone(),
                    start,
                    turns,
                }
            })
            .collect();
        Self {
            system,
            conversations,
        }
    }

    pub fn turns(&self) -> usize {
        self.conversations.iter().map(|c| c.turns.len()).sum()
    }

    pub fn mean_turns(&self) -> f64 {
        self.turns() as f64 / self.conversations.len().max(1) as f64
    }
}

/// SplitMix64: small, fast and the same on every platform, which is all a workload
/// generator needs (no external crate, no version drift changing the workload).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `low..=high` (`low` when the range is empty).
    pub fn between(&mut self, low: usize, high: usize) -> usize {
        if high <= low {
            return low;
        }
        low + (self.next_u64() % (high - low + 1) as u64) as usize
    }

    /// Exponentially distributed with this mean: gaps between Poisson arrivals.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        -mean * (1.0 - self.unit()).ln()
    }

    /// Words separated by spaces, `bytes` long.
    pub fn text(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 16);
        while out.len() < bytes {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(WORDS[self.between(0, WORDS.len() - 1)]);
        }
        out.truncate(bytes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkloadSpec {
        WorkloadSpec {
            conversations: 200,
            ..WorkloadSpec::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let a = Workload::generate(&spec());
        let b = Workload::generate(&spec());
        assert_eq!(a.system, b.system);
        assert_eq!(a.conversations, b.conversations);
        let other = Workload::generate(&WorkloadSpec { seed: 2, ..spec() });
        assert_ne!(a.conversations[0].turns, other.conversations[0].turns);
    }

    #[test]
    fn sizes_stay_in_their_ranges() {
        let w = Workload::generate(&spec());
        assert!(
            (1_200..1_300).contains(&w.system.len()),
            "{}",
            w.system.len()
        );
        for c in &w.conversations {
            assert!((4..=12).contains(&c.turns.len()));
            for (i, t) in c.turns.iter().enumerate() {
                let opening = if i == 0 { c.id.len() + 3 } else { 0 };
                assert!((200..=1_600).contains(&(t.user.len() - opening)));
                assert!((50..=250).contains(&t.num_predict));
                assert_eq!(t.think.is_zero(), i == 0);
            }
        }
        let first = w.conversations.iter().filter(|c| c.model == "llama3.2:3b");
        assert_eq!(first.count(), 100, "conversations split between the models");
    }

    #[test]
    fn arrivals_follow_the_rate() {
        let w = Workload::generate(&WorkloadSpec {
            conversations: 2_000,
            rate: 4.0,
            ..spec()
        });
        let last = w.conversations.last().expect("conversations").start;
        let expected = 1_999.0 / 4.0;
        let got = last.as_secs_f64();
        assert!(
            (got - expected).abs() < expected * 0.1,
            "{got} vs {expected}"
        );
        let at_once = Workload::generate(&WorkloadSpec {
            rate: 0.0,
            ..spec()
        });
        assert!(at_once.conversations.iter().all(|c| c.start.is_zero()));
    }
}
