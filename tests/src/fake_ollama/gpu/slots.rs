//! The prompt-cache slots of one loaded model, and which one a request takes.
//!
//! Ollama's runner keeps `num_parallel` slots per model, each holding the tokens of its
//! last prompt and reply (runner/ollamarunner/cache.go). `LoadCacheSlot` →
//! `findLongestCacheSlot` gives a request the free slot sharing the longest token prefix
//! with its prompt, scanning in slot order and keeping the first of equals. When no free
//! slot shares anything, the simulator takes the least recently used one, as llama.cpp's
//! server and Ollama's `OLLAMA_MULTIUSER_CACHE` do (plain Ollama takes the first free
//! slot in order). Only the tokens after the shared prefix are evaluated, and never
//! fewer than one: a fully cached prompt still re-evaluates its last token to get
//! logits to sample from.
//!
//! Not Ollama: with `keeping(n)`, the last `n` prompts released stay cached beyond the
//! slots, and a request reuses the longest prefix any of them shares (a paged prefix cache
//! such as vLLM's or SGLang's), to measure what Ollama's one prompt per slot leaves on the
//! table.

use std::collections::VecDeque;
use std::time::Instant;

use super::tokens::common_prefix;

#[derive(Debug, Default)]
struct Slot {
    tokens: Vec<u64>,
    in_use: bool,
    /// When a request last took it; `None` if never, which counts as oldest.
    last_used: Option<Instant>,
}

/// A slot given to a request: which one, and how many prompt tokens it already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    pub index: usize,
    pub cached: usize,
}

#[derive(Debug)]
pub(crate) struct Slots {
    slots: Vec<Slot>,
    /// Prompts (and replies) released earlier, oldest first, at most `keep`.
    kept: VecDeque<Vec<u64>>,
    keep: usize,
}

impl Slots {
    pub fn new(count: usize) -> Self {
        Self {
            slots: (0..count.max(1)).map(|_| Slot::default()).collect(),
            kept: VecDeque::new(),
            keep: 0,
        }
    }

    /// Also keeps the last `entries` prompts released (see the module's doc).
    pub fn keeping(mut self, entries: usize) -> Self {
        self.keep = entries;
        self
    }

    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.in_use).count()
    }

    /// Gives `prompt` a free slot, keeping the shared prefix and dropping the rest of
    /// what the slot held. `None` when every slot is busy.
    pub fn take(&mut self, prompt: &[u64], now: Instant) -> Option<Taken> {
        let (index, shared) = self.choose(prompt)?;
        let kept = self.kept.iter().map(|t| common_prefix(t, prompt)).max();
        let cached = shared
            .max(kept.unwrap_or(0))
            .min(prompt.len().saturating_sub(1));
        let slot = &mut self.slots[index];
        slot.in_use = true;
        slot.last_used = Some(now);
        slot.tokens.truncate(cached);
        Some(Taken { index, cached })
    }

    /// Frees a slot, which now holds `tokens` (the prompt and the reply generated).
    pub fn release(&mut self, index: usize, tokens: Vec<u64>) {
        if let Some(slot) = self.slots.get_mut(index) {
            slot.in_use = false;
            if self.keep > 0 {
                if self.kept.len() == self.keep {
                    self.kept.pop_front();
                }
                self.kept.push_back(tokens.clone());
            }
            slot.tokens = tokens;
        }
    }

    /// The free slot with the longest shared prefix (first of equals), or the least
    /// recently used free slot when none shares anything.
    fn choose(&self, prompt: &[u64]) -> Option<(usize, usize)> {
        let free = || self.slots.iter().enumerate().filter(|(_, s)| !s.in_use);
        let mut longest: Option<(usize, usize)> = None;
        for (index, slot) in free() {
            let shared = common_prefix(&slot.tokens, prompt);
            if longest.is_none_or(|(_, best)| shared > best) {
                longest = Some((index, shared));
            }
        }
        match longest {
            Some((_, 0)) => free()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(index, _)| (index, 0)),
            found => found,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hold(slots: &mut Slots, tokens: &[u64], at: Instant) -> usize {
        let taken = slots.take(tokens, at).expect("a free slot");
        slots.release(taken.index, tokens.to_vec());
        taken.index
    }

    #[test]
    fn the_longest_shared_prefix_wins_over_recency_and_order() {
        let t0 = Instant::now();
        let mut slots = Slots::new(3);
        let a = [1, 2, 3, 4, 5, 6];
        let b = [1, 2, 9, 9];
        assert_eq!(hold(&mut slots, &a, t0), 0);
        // b shares [1, 2] with slot 0, so it takes it (Ollama's rule), evicting a.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(hold(&mut slots, &b, t1), 0);
        let c = [7, 7, 7];
        // Nothing shared: the least recently used slot, a never-used one.
        assert_eq!(hold(&mut slots, &c, t1 + Duration::from_secs(1)), 1);
        let taken = slots.take(&[7, 7, 7, 8], t1 + Duration::from_secs(2));
        assert_eq!(
            taken,
            Some(Taken {
                index: 1,
                cached: 3
            })
        );
    }

    #[test]
    fn least_recently_used_free_slot_when_nothing_is_shared() {
        let t0 = Instant::now();
        let mut slots = Slots::new(2);
        assert_eq!(hold(&mut slots, &[1], t0), 0);
        assert_eq!(hold(&mut slots, &[2], t0 + Duration::from_secs(1)), 1);
        assert_eq!(hold(&mut slots, &[3], t0 + Duration::from_secs(2)), 0);
        assert_eq!(hold(&mut slots, &[4], t0 + Duration::from_secs(3)), 1);
    }

    #[test]
    fn busy_slots_are_skipped_and_a_full_hit_evaluates_one_token() {
        let now = Instant::now();
        let mut slots = Slots::new(2);
        let first = slots.take(&[1, 2, 3], now).expect("free");
        let second = slots.take(&[1, 2, 3], now).expect("the other slot");
        assert_ne!(first.index, second.index);
        assert_eq!(slots.busy(), 2);
        assert_eq!(slots.take(&[1], now), None);
        slots.release(first.index, vec![1, 2, 3]);
        let again = slots.take(&[1, 2, 3], now).expect("freed");
        assert_eq!(
            again,
            Taken {
                index: first.index,
                cached: 2
            }
        );
    }

    #[test]
    fn kept_prompts_serve_their_prefix_from_any_slot() {
        let now = Instant::now();
        let mut ollama = Slots::new(1);
        let mut paged = Slots::new(1).keeping(2);
        for slots in [&mut ollama, &mut paged] {
            hold(slots, &[1, 2, 3, 4], now);
            hold(slots, &[9, 9], now);
        }
        let cached = |s: &mut Slots| s.take(&[1, 2, 3, 4, 5], now).map(|t| t.cached);
        assert_eq!(cached(&mut ollama), Some(0), "the one slot holds [9, 9]");
        assert_eq!(cached(&mut paged), Some(4), "kept beyond the slot");
        paged.release(0, vec![5]);
        paged.release(0, vec![6]);
        assert_eq!(cached(&mut paged), Some(0), "only the last two are kept");
    }
}
