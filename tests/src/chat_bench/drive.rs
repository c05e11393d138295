//! Sending the workload: one task per conversation, started at its arrival time, its
//! turns one after another with a think time between them, each turn resending the
//! whole history with the replies as they came back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::turn::{self, Outcome, TurnResult};
use super::workload::{Conversation, Workload};
use crate::fake_ollama::gpu::chat_prompt_tokens;

/// How to send the workload.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// Gateway base URLs; with two, each conversation's turns alternate between them
    /// (two replicas taking turns, as behind a load balancer without stickiness).
    pub urls: Vec<String>,
    /// Send `X-Corral-Session: <conversation id>` with every turn.
    pub session_header: bool,
    /// At most this many conversations at once (a closed loop when the rate is 0).
    pub concurrency: Option<usize>,
    /// Longest a turn may take, streaming included.
    pub timeout: Duration,
    /// Further attempts at a failed turn before the conversation is abandoned.
    pub retries: usize,
    /// To count each turn's whole prompt as the simulator does.
    pub bytes_per_token: usize,
}

/// One attempt at one turn.
#[derive(Debug, Clone)]
pub struct TurnRecord {
    pub conversation: usize,
    pub turn: usize,
    /// Which of the URLs it went to.
    pub gateway: usize,
    /// When it was sent and when it ended, from the start of the run.
    pub sent: Duration,
    pub ended: Duration,
    /// The whole prompt in simulator tokens: `prompt_eval_count` with nothing cached.
    pub prompt_tokens: usize,
    pub outcome: Outcome,
    pub ttft: Option<Duration>,
    pub total: Duration,
    pub completion_tokens: u64,
    pub evaluated_tokens: u64,
}

/// Everything a run sent and saw.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub turns: Vec<TurnRecord>,
    /// From the start of the run to the end of the last conversation.
    pub wall: Duration,
    /// Conversations given up after a turn failed `retries + 1` times.
    pub abandoned: usize,
    /// When the last conversation started: until then a closed loop was saturated.
    pub last_start: Duration,
}

/// Runs every conversation of `workload` and returns when the last one ends.
pub async fn drive(workload: &Workload, options: &DriveOptions) -> RunRecord {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let limit = options
        .concurrency
        .map(|n| Arc::new(Semaphore::new(n.max(1))));
    let system = Arc::new(workload.system.clone());
    let options = Arc::new(options.clone());
    let began = Instant::now();
    let mut tasks = JoinSet::new();
    for conversation in workload.conversations.iter().cloned() {
        let (client, limit) = (client.clone(), limit.clone());
        let (system, options) = (Arc::clone(&system), Arc::clone(&options));
        tasks.spawn(async move {
            tokio::time::sleep_until((began + conversation.start).into()).await;
            let _permit = match limit {
                Some(limit) => limit.acquire_owned().await.ok(),
                None => None,
            };
            let started = began.elapsed();
            let (turns, abandoned) =
                converse(&client, &options, &system, &conversation, began).await;
            (turns, abandoned, started)
        });
    }
    let mut record = RunRecord::default();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((turns, abandoned, started)) = joined {
            record.turns.extend(turns);
            record.abandoned += usize::from(abandoned);
            record.last_start = record.last_start.max(started);
        }
    }
    record.wall = began.elapsed();
    record
        .turns
        .sort_by_key(|t| (t.sent, t.conversation, t.turn));
    record
}

/// One conversation's turns; returns their records and whether it was abandoned.
async fn converse(
    client: &reqwest::Client,
    options: &DriveOptions,
    system: &str,
    conversation: &Conversation,
    began: Instant,
) -> (Vec<TurnRecord>, bool) {
    let mut records = Vec::new();
    let mut messages = vec![json!({"role": "system", "content": system})];
    let session = options.session_header.then_some(conversation.id.as_str());
    for (index, plan) in conversation.turns.iter().enumerate() {
        messages.push(json!({"role": "user", "content": plan.user}));
        let body = json!({
            "model": conversation.model,
            "messages": messages,
            "stream": true,
            "options": {"num_predict": plan.num_predict},
        });
        let prompt_tokens = chat_prompt_tokens(&body, options.bytes_per_token);
        let gateway = index % options.urls.len().max(1);
        let url = &options.urls[gateway];
        let mut pause = plan.think;
        let mut reply = None;
        for _ in 0..=options.retries {
            tokio::time::sleep(pause).await;
            let sent = began.elapsed();
            let result = turn::send(client, url, session, &body, options.timeout).await;
            let ok = result.outcome == Outcome::Done;
            records.push(record(
                conversation,
                index,
                gateway,
                sent,
                began,
                prompt_tokens,
                &result,
            ));
            if ok {
                reply = Some(result.reply);
                break;
            }
            // A refused or broken turn is sent again after a pause, as a user would.
            pause = plan.think.max(Duration::from_millis(250));
        }
        let Some(reply) = reply else {
            return (records, true);
        };
        messages.push(json!({"role": "assistant", "content": reply}));
    }
    (records, false)
}

fn record(
    conversation: &Conversation,
    turn: usize,
    gateway: usize,
    sent: Duration,
    began: Instant,
    prompt_tokens: usize,
    result: &TurnResult,
) -> TurnRecord {
    TurnRecord {
        conversation: conversation.index,
        turn,
        gateway,
        sent,
        ended: began.elapsed(),
        prompt_tokens,
        outcome: result.outcome.clone(),
        ttft: result.ttft,
        total: result.total,
        completion_tokens: result.completion_tokens,
        evaluated_tokens: result.evaluated_tokens,
    }
}
