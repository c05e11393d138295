//! Prompt evaluation shares the GPU, and the decode steps that ride in its forward
//! passes wait for it.
//!
//! Prefill is compute bound: the GPU evaluates prompt tokens at one rate, however many
//! prompts there are. Ollama's runner (runner/ollamarunner/runner.go, `processBatch`)
//! builds each forward pass by walking the sequences in slot order, starting with the
//! one the previous pass left out: one token for each generating sequence, and pending
//! prompt tokens until the batch holds `num_batch` (512). llama.cpp's server does the
//! same (tools/server `update_slots`: "first, add sampled tokens from any ongoing
//! sequences", then "batch any pending prompts without exceeding n_batch"). So:
//!
//! - concurrent prompts take turns in chunks of up to `num_batch` tokens, each chunk
//!   taking its tokens × `prompt_ms_per_token`: two prompts evaluate at half the rate
//!   each, and a prompt's first token comes out of the pass that evaluates its last
//!   chunk;
//! - a generating sequence gets its next token out of the same pass as a chunk, so a
//!   decode step that would end while a chunk runs ends when the chunk does: a token
//!   per chunk instead of one per `gen_ms_per_token` while any prompt is evaluated.
//!
//! [`Prefill`] is that schedule for one GPU, worked out lazily under the GPU's lock each
//! time a request looks at it, so it depends only on when prompts arrived and how long
//! they are. Simplifications: a chunk carries `num_batch` prompt tokens even though the
//! decode tokens in its pass take a few of the 512 places; a prompt arriving on an idle
//! GPU starts at once (Ollama's next pass begins within a decode step); and the models
//! loaded on one GPU share one schedule, as they share its compute.

use std::collections::VecDeque;
use std::time::Instant;

use super::config::GpuModel;
use super::timing::scaled;

/// Chunks kept after they end, so that a decode step looked at late (its task woke
/// after the chunk that ran at its end had finished) is still held up by it.
const RECENT_CHUNKS: usize = 8;

/// A prompt being evaluated, by the id of its request.
#[derive(Debug)]
struct Prompt {
    id: u64,
    remaining: usize,
    /// When its last chunk ended: its first token.
    done_at: Option<Instant>,
}

/// One forward pass carrying prompt tokens: who got how many, and when it ends.
#[derive(Debug)]
struct Chunk {
    started: Instant,
    ends: Instant,
    shares: Vec<(u64, usize)>,
}

impl Chunk {
    fn covers(&self, at: Instant) -> bool {
        self.started < at && at < self.ends
    }
}

/// Where a prompt's evaluation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evaluation {
    /// Evaluated; the first token is out at this instant.
    Done(Instant),
    /// Still evaluating: look again when the running chunk ends, at this instant.
    Until(Instant),
}

/// The prompt evaluations of one GPU and the chunk running now.
#[derive(Debug, Default)]
pub(crate) struct Prefill {
    /// In arrival order, which is slot order for the walk of each pass.
    prompts: Vec<Prompt>,
    /// The prompt the next chunk starts with: the one the last chunk left out.
    first: Option<u64>,
    chunk: Option<Chunk>,
    recent: VecDeque<Chunk>,
}

impl Prefill {
    /// Queues `tokens` prompt tokens of request `id`, arriving at `now`.
    pub fn push(&mut self, config: &GpuModel, id: u64, tokens: usize, now: Instant) {
        self.run_until(config, now);
        self.prompts.push(Prompt {
            id,
            remaining: tokens,
            done_at: (tokens == 0).then_some(now),
        });
        if self.chunk.is_none() {
            self.start_chunk(config, now);
        }
    }

    /// Where request `id`'s prompt stands at `now`; once done, it is forgotten.
    pub fn poll(&mut self, config: &GpuModel, id: u64, now: Instant) -> Evaluation {
        self.run_until(config, now);
        let Some(prompt) = self.prompts.iter().find(|p| p.id == id) else {
            return Evaluation::Done(now);
        };
        if let Some(at) = prompt.done_at {
            self.remove(id);
            return Evaluation::Done(at);
        }
        // A prompt with tokens left always has a chunk running; start one if not.
        if self.chunk.is_none() {
            self.start_chunk(config, now);
        }
        Evaluation::Until(self.chunk.as_ref().map_or(now, |c| c.ends))
    }

    /// Forgets request `id`'s prompt (its client went away); a chunk already running
    /// with its tokens still runs to its end, as a forward pass does.
    pub fn remove(&mut self, id: u64) {
        self.prompts.retain(|p| p.id != id);
    }

    /// When a decode step due to end at `end` really ends, looked at from `now` (not
    /// before `end`): at the end of the chunk running at that moment, if any.
    pub fn step_end(&mut self, config: &GpuModel, end: Instant, now: Instant) -> Instant {
        self.run_until(config, now);
        let mut chunks = self.chunk.iter().chain(self.recent.iter().rev());
        chunks.find(|c| c.covers(end)).map_or(end, |c| c.ends)
    }

    /// Prompts being evaluated right now.
    pub fn evaluating(&self) -> usize {
        self.prompts.iter().filter(|p| p.done_at.is_none()).count()
    }

    /// Ends every chunk due by `now`, each starting the next where it ended.
    fn run_until(&mut self, config: &GpuModel, now: Instant) {
        while let Some(chunk) = self.chunk.take_if(|c| c.ends <= now) {
            for (id, tokens) in &chunk.shares {
                if let Some(prompt) = self.prompts.iter_mut().find(|p| p.id == *id) {
                    prompt.remaining = prompt.remaining.saturating_sub(*tokens);
                    if prompt.remaining == 0 {
                        prompt.done_at.get_or_insert(chunk.ends);
                    }
                }
            }
            let ends = chunk.ends;
            self.recent.push_back(chunk);
            if self.recent.len() > RECENT_CHUNKS {
                self.recent.pop_front();
            }
            self.start_chunk(config, ends);
        }
    }

    /// Ollama's walk for one pass, from `at`: from the prompt the last pass left out (or
    /// where it started), each takes what it has left while the batch has room; the first
    /// one that gets nothing starts the next pass.
    fn start_chunk(&mut self, config: &GpuModel, at: Instant) {
        let pending: Vec<&Prompt> = self.prompts.iter().filter(|p| p.remaining > 0).collect();
        if pending.is_empty() {
            self.chunk = None;
            return;
        }
        let start = pending
            .iter()
            .position(|p| Some(p.id) == self.first)
            .unwrap_or(0);
        let mut room = config.num_batch;
        let mut shares = Vec::new();
        let mut left_out = None;
        for k in 0..pending.len() {
            let prompt = pending[(start + k) % pending.len()];
            if room == 0 {
                left_out = Some(prompt.id);
                break;
            }
            let tokens = prompt.remaining.min(room);
            room -= tokens;
            shares.push((prompt.id, tokens));
        }
        self.first = left_out.or(Some(pending[start].id));
        let tokens: usize = shares.iter().map(|(_, n)| n).sum();
        let took = tokens as f64 * config.prompt_ms_per_token;
        self.chunk = Some(Chunk {
            started: at,
            ends: at + scaled(took, config.time_scale),
            shares,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 1 ms per token, chunks of 100 tokens: a full chunk takes 100 ms.
    fn config() -> GpuModel {
        GpuModel {
            prompt_ms_per_token: 1.0,
            num_batch: 100,
            ..GpuModel::default()
        }
        .sanitized()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Polls `id` at each chunk end until it is done; when its first token came out.
    fn finish(prefill: &mut Prefill, config: &GpuModel, id: u64, mut now: Instant) -> Instant {
        loop {
            match prefill.poll(config, id, now) {
                Evaluation::Done(at) => return at,
                Evaluation::Until(at) => now = at,
            }
        }
    }

    #[test]
    fn a_prompt_alone_takes_its_tokens_time() {
        let (config, t0) = (config(), Instant::now());
        let mut prefill = Prefill::default();
        prefill.push(&config, 1, 250, t0);
        assert_eq!(
            prefill.poll(&config, 1, t0),
            Evaluation::Until(t0 + ms(100))
        );
        assert_eq!(finish(&mut prefill, &config, 1, t0), t0 + ms(250));
        assert_eq!(prefill.evaluating(), 0);
        prefill.push(&config, 2, 0, t0 + ms(300));
        assert_eq!(
            prefill.poll(&config, 2, t0 + ms(300)),
            Evaluation::Done(t0 + ms(300))
        );
    }

    #[test]
    fn concurrent_prompts_take_turns_and_share_the_rate() {
        let (config, t0) = (config(), Instant::now());
        let mut prefill = Prefill::default();
        prefill.push(&config, 1, 400, t0);
        prefill.push(&config, 2, 400, t0);
        assert_eq!(prefill.evaluating(), 2);
        // The first chunk began before 2 came, and the walk of the second starts again
        // with 1, leaving 2 out; from then on they alternate: 1, 1, 2, 1, 2, 1, 2, 2.
        let one = finish(&mut prefill, &config, 1, t0);
        let two = finish(&mut prefill, &config, 2, t0);
        assert_eq!(one, t0 + ms(600));
        assert_eq!(two, t0 + ms(800), "twice as long as alone");
    }

    #[test]
    fn a_short_prompt_waits_at_most_two_chunks_behind_a_long_one() {
        let (config, t0) = (config(), Instant::now());
        let mut prefill = Prefill::default();
        prefill.push(&config, 1, 1_000, t0);
        prefill.push(&config, 2, 20, t0 + ms(30));
        // The next pass starts again with 1, which fills it and leaves 2 out; 2 then
        // goes first in the one after, and 1 takes what 2 leaves of it.
        assert_eq!(finish(&mut prefill, &config, 2, t0 + ms(30)), t0 + ms(300));
        assert_eq!(finish(&mut prefill, &config, 1, t0), t0 + ms(1_020));
    }

    #[test]
    fn decode_steps_end_with_the_chunk_running_at_their_end() {
        let (config, t0) = (config(), Instant::now());
        let mut prefill = Prefill::default();
        // Before any prompt, and after the last chunk: steps end when due.
        assert_eq!(prefill.step_end(&config, t0, t0), t0);
        prefill.push(&config, 1, 150, t0 + ms(10));
        let late = t0 + ms(20);
        assert_eq!(prefill.step_end(&config, late, late), t0 + ms(110));
        // Looked at after the chunk ended, the step still waited for it.
        assert_eq!(prefill.step_end(&config, late, t0 + ms(130)), t0 + ms(110));
        // A step due exactly when a chunk starts is not held by it.
        assert_eq!(
            prefill.step_end(&config, t0 + ms(110), t0 + ms(110)),
            t0 + ms(110)
        );
        assert_eq!(
            prefill.step_end(&config, t0 + ms(120), t0 + ms(120)),
            t0 + ms(160)
        );
        assert_eq!(
            prefill.step_end(&config, t0 + ms(170), t0 + ms(170)),
            t0 + ms(170)
        );
    }

    #[test]
    fn a_prompt_removed_midway_frees_the_gpu_after_its_chunk() {
        let (config, t0) = (config(), Instant::now());
        let mut prefill = Prefill::default();
        prefill.push(&config, 1, 1_000, t0);
        prefill.push(&config, 2, 150, t0);
        prefill.remove(1);
        // 1's first chunk runs out; then 2 has the GPU to itself.
        assert_eq!(finish(&mut prefill, &config, 2, t0), t0 + ms(250));
        assert_eq!(prefill.evaluating(), 0);
    }
}
