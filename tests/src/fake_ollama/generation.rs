//! Producing a reply token by token, with the configured delays and failures.
//!
//! Both API families share this: a [`Generation`] yields [`Step`]s, and each route
//! renders them as NDJSON lines or SSE events. Generation happens inside the response
//! body, so tokens are produced as the connection writes them, a client that goes away
//! stops generation (as on Ollama), and aborting a connection aborts its stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;

use super::gpu::{Job, PromptCost};
use super::request::MODEL_ERROR;
use super::shapes::token_text;
use super::state::{Settings, Shared};
use crate::in_flight::InFlight;

/// Fixed `load_duration` reported in nanoseconds without a simulated GPU: the model is
/// always warm.
const LOAD_DURATION_NS: u64 = 1_000_000;

/// What one reply will be, decided from the request before anything is generated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub tokens: usize,
    pub done_reason: &'static str,
    pub prompt_tokens: u64,
}

impl Plan {
    /// `cap` is `options.num_predict` (or `max_tokens` on `/v1`): when it cuts the
    /// reply short, Ollama reports `done_reason: "length"`. Negative means no cap.
    pub fn new(settings: &Settings, prompt_tokens: u64, cap: Option<i64>) -> Self {
        let natural = settings.tokens;
        match cap.and_then(|c| usize::try_from(c).ok()) {
            Some(cap) if cap < natural => Self {
                tokens: cap,
                done_reason: "length",
                prompt_tokens,
            },
            _ => Self {
                tokens: natural,
                done_reason: "stop",
                prompt_tokens,
            },
        }
    }
}

/// The counts and timings of a finished reply, named as in Ollama's final chunk.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    #[serde(skip)]
    pub done_reason: &'static str,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    pub eval_duration: u64,
}

/// One unit of a reply.
#[derive(Debug)]
pub(crate) enum Step {
    Token(String),
    Done(Summary),
    /// The model failed after the reply began: the last step, instead of `Done`.
    Error(String),
}

/// Why a whole (non-streaming) reply could not be produced.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection must be dropped with no response.
    Died,
    /// The model failed: answer 500 with this message.
    Error(String),
}

/// The error a body yields to make hyper drop the connection without a final chunk.
#[derive(Debug)]
pub(crate) struct InstanceDied;

impl std::fmt::Display for InstanceDied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fake ollama instance died mid-generation")
    }
}

impl std::error::Error for InstanceDied {}

/// Marks a response the server must not send: it drops the connection instead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// A response that makes the server abort the connection before any byte of it.
pub(crate) fn dropped_connection() -> Response {
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(DropConnection);
    response
}

/// A reply being generated; it counts as in flight until dropped.
pub(crate) struct Generation {
    shared: Arc<Shared>,
    plan: Plan,
    _in_flight: InFlight,
    emitted: usize,
    started: Instant,
    prompt_done: Option<Instant>,
    finished: bool,
    /// The request's life on the simulated GPU, which then sets every delay and count.
    gpu: Option<Job>,
    prompt_cost: PromptCost,
}

impl Generation {
    pub fn start(shared: &Arc<Shared>, plan: Plan, gpu: Option<Job>) -> Self {
        Self {
            shared: Arc::clone(shared),
            plan,
            _in_flight: shared.in_flight.enter(),
            emitted: 0,
            started: gpu.as_ref().map_or_else(Instant::now, Job::arrived),
            prompt_done: None,
            finished: false,
            gpu,
            prompt_cost: PromptCost::default(),
        }
    }

    /// Waits out what comes before the next step: on the GPU, the prompt's evaluation
    /// before the first token and a decode step before each later token and before the
    /// final chunk (the step that produced the stop); otherwise the fixed delays.
    async fn pace(&mut self, is_token: bool) {
        if let Some(job) = self.gpu.as_mut() {
            if self.prompt_done.is_none() {
                let (cost, ended) = job.evaluate_prompt().await;
                self.prompt_cost = cost;
                self.prompt_done = Some(ended);
            } else {
                job.decode_step().await;
            }
            return;
        }
        let settings = &self.shared.settings;
        let mut delay = Duration::ZERO;
        if self.prompt_done.is_none() {
            delay += settings.first_token_delay;
        }
        if is_token {
            delay += settings.token_delay;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Waits out the next delay and produces the next step; `None` once done or dead.
    async fn next_step(&mut self) -> Option<Result<Step, InstanceDied>> {
        if self.finished {
            return None;
        }
        let is_token = self.emitted < self.plan.tokens;
        self.pace(is_token).await;
        let now = Instant::now();
        let prompt_done = *self.prompt_done.get_or_insert(now);
        let settings = &self.shared.settings;
        if settings.fail_after_tokens == Some(self.emitted) {
            self.finished = true;
            // Let hyper flush the tokens already produced (it writes when the body
            // pauses), as a real instance's earlier lines would have left already.
            tokio::task::yield_now().await;
            return Some(Err(InstanceDied));
        }
        if settings.error_after_tokens == Some(self.emitted) {
            self.finished = true;
            return Some(Ok(Step::Error(MODEL_ERROR.to_string())));
        }
        if is_token {
            self.emitted += 1;
            self.shared.add_completion_tokens(1);
            let text = token_text(self.emitted);
            if let Some(job) = self.gpu.as_mut() {
                job.generated(&text);
            }
            return Some(Ok(Step::Token(text)));
        }
        self.finished = true;
        let summary = self.summary(now, prompt_done);
        self.shared.add_prompt_tokens(summary.prompt_eval_count);
        Some(Ok(Step::Done(summary)))
    }

    /// The final chunk's counters: Ollama's, measured on the GPU, or the fixed ones.
    fn summary(&self, now: Instant, prompt_done: Instant) -> Summary {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let (load, prompt_eval_count, prompt_eval) = match self.gpu {
            Some(_) => (
                nanos(self.prompt_cost.load),
                self.prompt_cost.evaluated as u64,
                nanos(self.prompt_cost.eval),
            ),
            None => (
                LOAD_DURATION_NS,
                self.plan.prompt_tokens,
                nanos(prompt_done - self.started),
            ),
        };
        let total = match self.gpu {
            Some(_) => nanos(now - self.started),
            None => nanos(now - self.started) + LOAD_DURATION_NS,
        };
        Summary {
            done_reason: self.plan.done_reason,
            total_duration: total,
            load_duration: load,
            prompt_eval_count,
            prompt_eval_duration: prompt_eval,
            eval_count: self.emitted as u64,
            eval_duration: nanos(now - prompt_done),
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Step, InstanceDied>> + Send {
        futures::stream::unfold(self, |mut generation| async move {
            let step = generation.next_step().await?;
            Some((step, generation))
        })
    }

    /// Generates the whole reply, for non-streaming answers: the text and the summary.
    pub async fn finish(mut self) -> Result<(String, Summary), Failure> {
        let mut text = String::new();
        while let Some(step) = self.next_step().await {
            match step.map_err(|_| Failure::Died)? {
                Step::Token(t) => text.push_str(&t),
                Step::Done(summary) => return Ok((text, summary)),
                Step::Error(message) => return Err(Failure::Error(message)),
            }
        }
        Err(Failure::Died)
    }
}

/// Streams a generation, rendering each step with `render`.
///
/// Like Ollama, the status line and headers leave with the first token (after the
/// first-token delay), so a failure before it drops the connection with no response.
pub(crate) async fn streaming_response<R>(
    generation: Generation,
    content_type: &'static str,
    mut render: R,
) -> Response
where
    R: FnMut(Step) -> Bytes + Send + 'static,
{
    let mut steps = Box::pin(generation.into_stream());
    let first = match steps.next().await {
        Some(Ok(step)) => step,
        _ => return dropped_connection(),
    };
    let body = futures::stream::once(async move { Ok(first) })
        .chain(steps)
        .map(move |step| step.map(&mut render));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// One JSON value followed by `\n`: an NDJSON line.
pub(crate) fn ndjson_line<T: Serialize>(value: &T) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// `data: <json>\n\n`: one SSE event.
pub(crate) fn sse_event<T: Serialize>(value: &T) -> Vec<u8> {
    let mut event = b"data: ".to_vec();
    event.extend(serde_json::to_vec(value).unwrap_or_default());
    event.extend_from_slice(b"\n\n");
    event
}
