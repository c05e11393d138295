//! The task between the gateway's reply stream and the caller: it forwards each chunk as it
//! arrives and stores the reply when the stream ends, whichever way it ends.
//!
//! It runs as its own task (tracked, so shutdown waits for it), not inside the response
//! body: when the caller disconnects, axum drops the body, the channel closes, and this
//! task notices, stops reading from the gateway (which then cancels the generation), and
//! still writes what was received, marked incomplete. The same happens when the gateway
//! fails mid-way. The write is an update of the placeholder row made before the call, so it
//! happens exactly once per turn.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::ndjson::ReplyParser;
use crate::api::AppState;
use crate::db::messages::{self, Reply, Turn};

/// Chunks buffered between the gateway and a slow caller; beyond this the relay waits, so
/// backpressure reaches the gateway instead of memory growing.
const CHANNEL: usize = 32;

/// Attempts to store a reply while the database is unavailable, and the first pause.
const STORE_ATTEMPTS: u32 = 6;
const STORE_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Complete,
    ClientGone,
    UpstreamError,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientGone => "client_gone",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

/// Starts relaying `upstream` and returns the body stream for the caller.
pub fn spawn(
    state: &AppState,
    turn: Turn,
    upstream: reqwest::Response,
    request_id: String,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL);
    let task_state = state.clone();
    crate::metrics::get().chat_streams_active.inc();
    state.relays.spawn(async move {
        relay(task_state, turn, upstream, tx, request_id).await;
        crate::metrics::get().chat_streams_active.dec();
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(chunk), rx))
    })
}

async fn relay(
    state: AppState,
    turn: Turn,
    upstream: reqwest::Response,
    tx: mpsc::Sender<Bytes>,
    request_id: String,
) {
    let mut parser = ReplyParser::default();
    let mut stream = upstream.bytes_stream();
    let outcome = loop {
        tokio::select! {
            // The caller went away while the model was thinking: stop now, not at the next
            // token.
            () = tx.closed() => break Outcome::ClientGone,
            next = stream.next() => match next {
                Some(Ok(chunk)) => {
                    parser.feed(&chunk);
                    if tx.send(chunk).await.is_err() {
                        break Outcome::ClientGone;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(request_id = %request_id, error = %e, "gateway stream broke mid-reply");
                    let line = serde_json::json!({
                        "error": "the model's reply was cut short",
                        "code": "upstream_unavailable",
                    });
                    let _ = tx.send(Bytes::from(format!("{line}\n"))).await;
                    break Outcome::UpstreamError;
                }
                None => {
                    parser.finish();
                    break if parser.complete() { Outcome::Complete } else { Outcome::UpstreamError };
                }
            }
        }
    };
    // Closing the gateway call now makes it cancel the generation when the caller is gone.
    drop(stream);
    drop(tx);
    store(&state, &turn, &parser, outcome, &request_id).await;
}

async fn store(
    state: &AppState,
    turn: &Turn,
    parser: &ReplyParser,
    outcome: Outcome,
    request_id: &str,
) {
    let m = crate::metrics::get();
    m.chat_streams.with_label_values(&[outcome.label()]).inc();
    let complete = outcome == Outcome::Complete;
    let reply = Reply {
        message_id: turn.assistant_message_id,
        content: &parser.content,
        prompt_tokens: parser.prompt_tokens,
        completion_tokens: parser.completion_tokens,
        complete,
    };
    let mut pause = STORE_BACKOFF;
    for attempt in 1..=STORE_ATTEMPTS {
        match messages::finish_reply(&state.pool, &reply).await {
            Ok(()) => {
                if let Some(n) = parser.prompt_tokens {
                    m.chat_tokens
                        .with_label_values(&["prompt"])
                        .inc_by(n.max(0) as u64);
                }
                if let Some(n) = parser.completion_tokens {
                    m.chat_tokens
                        .with_label_values(&["completion"])
                        .inc_by(n.max(0) as u64);
                }
                tracing::info!(
                    request_id,
                    conversation = %turn.conversation.id,
                    message_id = turn.assistant_message_id,
                    outcome = outcome.label(),
                    bytes = parser.content.len(),
                    prompt_tokens = parser.prompt_tokens,
                    completion_tokens = parser.completion_tokens,
                    "chat reply stored"
                );
                return;
            }
            Err(e) if e.is_unavailable() && attempt < STORE_ATTEMPTS => {
                tracing::warn!(request_id, attempt, error = %e, "storing the reply failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                m.replies_lost.inc();
                tracing::error!(
                    request_id,
                    conversation = %turn.conversation.id,
                    message_id = turn.assistant_message_id,
                    bytes = parser.content.len(),
                    error = %e,
                    "could not store the reply; the message stays empty and incomplete"
                );
                return;
            }
        }
    }
}
