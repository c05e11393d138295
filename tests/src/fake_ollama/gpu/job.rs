//! One request's life on the simulated GPU, driven by the reply's generation.
//!
//! The reply asks the job to evaluate its prompt (wait for its model and a slot, then
//! for the GPU to evaluate the uncached tokens, sharing it with other prompts) before its
//! first token, and for a decode step before each later one (held up by a prompt chunk
//! running at its end). Dropping the job, when the reply ends or its client goes away, frees
//! the slot, which keeps the prompt and the reply produced so far for the next turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep_until;

use super::prefill::Evaluation;
use super::schedule::{Place, Progress, Ticket};
use super::slots::Taken;
use super::timing::{batch_factor, scaled};
use super::tokens::Rendered;
use super::Gpu;

/// What the prompt phase cost, named as Ollama reports it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PromptCost {
    /// From arrival until the model was ready for this request; zero when it already was.
    pub load: Duration,
    /// Tokens evaluated, the ones not found in the slot's cache.
    pub evaluated: usize,
    pub eval: Duration,
}

pub(crate) struct Job {
    gpu: Arc<Gpu>,
    ticket: Ticket,
    prompt: Rendered,
    tokens: Vec<u64>,
    reply: String,
    /// When the next decode step ends: steps are paced on a fixed schedule so that
    /// sub-millisecond steps under a small `time_scale` keep their average rate.
    next_at: Instant,
}

impl Job {
    pub(super) fn new(gpu: Arc<Gpu>, ticket: Ticket, prompt: Rendered) -> Self {
        let tokens = prompt.tokens(gpu.config.bytes_per_token);
        Self {
            gpu,
            next_at: ticket.arrived,
            ticket,
            prompt,
            tokens,
            reply: String::new(),
        }
    }

    /// When the request arrived: where Ollama's `total_duration` starts.
    pub fn arrived(&self) -> Instant {
        self.ticket.arrived
    }

    /// Waits for the model and a slot, then for the GPU to evaluate the uncached tokens
    /// (alone, or taking turns with other prompts); returns its cost and when it ended,
    /// where decoding starts.
    pub async fn evaluate_prompt(&mut self) -> (PromptCost, Instant) {
        let (ready_at, taken) = self.wait_ready().await;
        let taken = taken.unwrap_or(Taken {
            index: 0,
            cached: 0,
        });
        let evaluated = self.tokens.len() - taken.cached;
        let start = Instant::now();
        {
            let mut state = self.gpu.lock();
            state.counters.prompt(taken.cached, evaluated);
            let id = self.ticket.id;
            state.prefill.push(&self.gpu.config, id, evaluated, start);
        }
        self.wait_evaluated().await;
        // Decode steps count from when evaluation really ended (the first token), so
        // that `eval_duration` covers every step even if this wait overran.
        self.next_at = Instant::now();
        let cost = PromptCost {
            load: self.load_duration(ready_at),
            evaluated,
            eval: self.next_at - start,
        };
        (cost, self.next_at)
    }

    /// Ollama's `load_duration`: scheduling until the model could serve this request.
    fn load_duration(&self, ready_at: Instant) -> Duration {
        let attached = self.ticket.attached_at.unwrap_or(self.ticket.arrived);
        attached.max(ready_at) - self.ticket.arrived
    }

    /// Waits until the model is loaded, for Ollama's load-only requests.
    pub async fn load(&mut self) {
        self.wait_ready().await;
    }

    /// Sleeps from one chunk end to the next until the prompt's last chunk has run.
    async fn wait_evaluated(&mut self) {
        loop {
            let now = Instant::now();
            let evaluation = {
                let mut state = self.gpu.lock();
                state.prefill.poll(&self.gpu.config, self.ticket.id, now)
            };
            match evaluation {
                Evaluation::Done(_) => return,
                Evaluation::Until(at) => sleep_until(at.into()).await,
            }
        }
    }

    /// One decode step, slower the more slots are busy on the GPU right now, and ending
    /// no earlier than a prompt chunk running when it would end (the token comes out of
    /// that chunk's forward pass).
    pub async fn decode_step(&mut self) {
        let busy = self.gpu.lock().busy();
        let config = &self.gpu.config;
        let ms = config.gen_ms_per_token * batch_factor(busy, config.batch_slowdown);
        let mut end = self.next_at + scaled(ms, config.time_scale);
        loop {
            sleep_until(end.into()).await;
            let now = Instant::now();
            let held = self.gpu.lock().prefill.step_end(config, end, now);
            if held <= end {
                break;
            }
            end = held;
        }
        self.next_at = end;
    }

    /// Records a token of the reply, which the slot will hold after the prompt.
    pub fn generated(&mut self, text: &str) {
        self.reply.push_str(text);
    }

    /// Steps the scheduler until the model is ready (and a slot taken), sleeping between
    /// steps until something changes or a load ends. It registers for the change before
    /// looking, so a change between the look and the sleep is not missed.
    async fn wait_ready(&mut self) -> (Instant, Option<Taken>) {
        let gpu = Arc::clone(&self.gpu);
        loop {
            let changed = gpu.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let progress = gpu.advance(&mut self.ticket, &self.tokens);
            match progress {
                Progress::Ready { ready_at, slot } => return (ready_at, slot),
                Progress::Wait(None) => changed.await,
                Progress::Wait(Some(until)) => {
                    tokio::select! {
                        _ = &mut changed => {}
                        _ = sleep_until(until.into()) => {}
                    }
                }
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let held = match self.ticket.place {
            Place::Running { .. } => self
                .prompt
                .with_reply(&self.reply)
                .tokens(self.gpu.config.bytes_per_token),
            _ => Vec::new(),
        };
        self.gpu.leave(&mut self.ticket, held);
    }
}
