//! `corral-soak`: the load driver of `bench/soak.sh`.
//!
//! `--concurrency` workers send a mix of requests to the gateway for `--duration-s`
//! seconds: streaming and non-streaming `/api/chat`, `/api/generate` and
//! `/v1/chat/completions` (with and without `stream_options.include_usage`), `/api/tags`,
//! chats over Pingora's 64 KiB replay buffer (the relay path), malformed JSON (400 expected)
//! and oversize bodies (413 expected). A share of streaming clients hang up after a few
//! lines. Meanwhile the script kills and restarts fake Ollama instances and appends what it
//! did to the `--events` file, which the driver reads to tell failures it should excuse
//! (every instance was down; the instance died while holding the request) from the ones it
//! must not (a connect failure while another instance was healthy, which the gateway must
//! retry).
//!
//! Each worker is one client with one keep-alive connection (a new one after a hang-up or
//! a closed connection), so what a connection saw before a failure is known: a failure on a
//! connection reused right after an interrupted stream is pointed out in its sample. An
//! oversize body whose 413 never reached the client (the gateway closed while the body was
//! still being sent) is the client's fault, so it is counted apart (`refusal_unseen`).
//!
//! Every request ends in exactly one [`Class`]; the driver prints the counts, a few samples
//! of each problem class (with the `X-Request-Id` the gateway logged; `--problems` writes
//! all of them), and exits 1 when a must-be-0 class is not 0 (see [`Class::must_be_zero`]). Every request is bounded by
//! `--timeout-s`, so the driver never hangs on a gateway that does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "corral-soak",
    about = "Mixed-traffic soak driver for the Corral gateway (used by bench/soak.sh)"
)]
struct Args {
    /// The gateway's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// How long workers keep starting new requests, in seconds.
    #[arg(long, default_value_t = 600.0)]
    duration_s: f64,
    /// Concurrent workers (each sends one request at a time).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value = "llama3:8b")]
    model: String,
    /// The script's instance events: lines `<unix_ms> <instance> up|down|faulty`. Without
    /// it, every instance is taken to be up all along.
    #[arg(long)]
    events: Option<PathBuf>,
    /// After an instance comes back, how long the gateway may still not know (health
    /// interval and check time), in milliseconds.
    #[arg(long, default_value_t = 3000)]
    settle_ms: u64,
    /// Share of streaming requests whose client hangs up after a few lines, in percent.
    #[arg(long, default_value_t = 15)]
    cancel_pct: u32,
    /// The gateway's `server.max_body_bytes`; oversize requests send 1 KiB more.
    #[arg(long, default_value_t = 1_048_576)]
    max_body_bytes: usize,
    /// Give up on one request (headers and whole body) after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Write every request of a sampled class here, one line each (the summary shows only
    /// the first few of each class).
    #[arg(long)]
    problems: Option<PathBuf>,
}

/// What a worker sends. Each kind has its own expectations of a good answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ChatStream,
    Chat,
    GenerateStream,
    Generate,
    OpenAiStream,
    OpenAiStreamUsage,
    OpenAi,
    Tags,
    LargeChatStream,
    Malformed,
    Oversize,
}

/// The traffic mix: streams dominate, as on a chat platform; the rest keeps every other
/// path and the refusal paths busy.
const MIX: &[(Kind, u32)] = &[
    (Kind::ChatStream, 24),
    (Kind::Chat, 10),
    (Kind::GenerateStream, 8),
    (Kind::Generate, 5),
    (Kind::OpenAiStream, 12),
    (Kind::OpenAiStreamUsage, 8),
    (Kind::OpenAi, 8),
    (Kind::Tags, 10),
    (Kind::LargeChatStream, 3),
    (Kind::Malformed, 8),
    (Kind::Oversize, 4),
];

/// Size of the content of a [`Kind::LargeChatStream`]: above Pingora's 64 KiB replay
/// buffer, so the gateway forwards it through its relay.
const LARGE_CHAT_BYTES: usize = 100 * 1024;

/// The most lines a cancelling client reads before it hangs up (fewer than a reply has).
const MAX_LINES_BEFORE_CANCEL: u64 = 5;

/// How a response body is framed, which decides how its end is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Ollama's streams: one JSON object per line, the last one `done: true`.
    Ndjson,
    /// OpenAI's streams: `data: <json>` events, the last one `data: [DONE]`.
    Sse,
    /// One JSON document.
    Json,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ChatStream => "chat_stream",
            Kind::Chat => "chat",
            Kind::GenerateStream => "generate_stream",
            Kind::Generate => "generate",
            Kind::OpenAiStream => "v1_chat_stream",
            Kind::OpenAiStreamUsage => "v1_chat_stream_usage",
            Kind::OpenAi => "v1_chat",
            Kind::Tags => "tags",
            Kind::LargeChatStream => "large_chat_stream",
            Kind::Malformed => "malformed_json",
            Kind::Oversize => "oversize_body",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::GenerateStream | Kind::Generate => "/api/generate",
            Kind::OpenAiStream | Kind::OpenAiStreamUsage | Kind::OpenAi => "/v1/chat/completions",
            Kind::Tags => "/api/tags",
            _ => "/api/chat",
        }
    }

    fn framing(self) -> Framing {
        match self {
            Kind::ChatStream | Kind::GenerateStream | Kind::LargeChatStream => Framing::Ndjson,
            Kind::OpenAiStream | Kind::OpenAiStreamUsage => Framing::Sse,
            _ => Framing::Json,
        }
    }

    fn streams(self) -> bool {
        self.framing() != Framing::Json
    }

    /// The refusal this kind must get, if it is meant to be refused.
    fn expected_refusal(self) -> Option<StatusCode> {
        match self {
            Kind::Malformed => Some(StatusCode::BAD_REQUEST),
            Kind::Oversize => Some(StatusCode::PAYLOAD_TOO_LARGE),
            _ => None,
        }
    }
}

/// Where one request ended up. Each request gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Ok,
    Expected4xx,
    RefusalUnseen,
    Cancelled,
    Interrupted,
    UpstreamDied,
    UnavailableAllDown,
    FailedUnstarted,
    ClosedAfterInterrupted,
    MalformedLastLine,
    StreamCut,
    TimedOut,
    Unexpected,
}

impl Class {
    const ALL: [Class; 13] = [
        Class::Ok,
        Class::Expected4xx,
        Class::RefusalUnseen,
        Class::Cancelled,
        Class::Interrupted,
        Class::UpstreamDied,
        Class::UnavailableAllDown,
        Class::FailedUnstarted,
        Class::ClosedAfterInterrupted,
        Class::MalformedLastLine,
        Class::StreamCut,
        Class::TimedOut,
        Class::Unexpected,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Expected4xx => "expected_4xx",
            Class::RefusalUnseen => "refusal_unseen",
            Class::Cancelled => "cancelled",
            Class::Interrupted => "interrupted",
            Class::UpstreamDied => "upstream_died",
            Class::UnavailableAllDown => "unavailable_all_down",
            Class::FailedUnstarted => "failed_unstarted",
            Class::ClosedAfterInterrupted => "closed_after_interrupted",
            Class::MalformedLastLine => "malformed_last_line",
            Class::StreamCut => "stream_cut",
            Class::TimedOut => "timed_out",
            Class::Unexpected => "unexpected",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Class::Ok => "complete answer",
            Class::Expected4xx => "malformed JSON got 400, oversize body got 413",
            Class::RefusalUnseen => "oversize body: connection closed before the 413 was read",
            Class::Cancelled => "the client hung up mid-stream on purpose",
            Class::Interrupted => "stream ended by the gateway's error line (instance died)",
            Class::UpstreamDied => "502/504 before the reply: its instance died holding it",
            Class::UnavailableAllDown => "5xx or no answer while no instance was up",
            Class::FailedUnstarted => "5xx or no answer while an instance was healthy",
            Class::ClosedAfterInterrupted => {
                "no answer: sent on the connection the gateway closed after a cut stream"
            }
            Class::MalformedLastLine => "stream whose last line is not whole JSON",
            Class::StreamCut => "body ended without done/[DONE] or an error line",
            Class::TimedOut => "no complete answer within --timeout-s",
            Class::Unexpected => "any other answer (wrong status or shape)",
        }
    }

    /// Classes that mean the gateway broke a promise. The script's verdict (and this
    /// driver's exit status) fails when any of them is not 0.
    fn must_be_zero(self) -> bool {
        matches!(
            self,
            Class::FailedUnstarted | Class::MalformedLastLine | Class::StreamCut | Class::TimedOut
        )
    }

    /// Classes worth showing examples of.
    fn sampled(self) -> bool {
        self.must_be_zero()
            || matches!(
                self,
                Class::Unexpected
                    | Class::UpstreamDied
                    | Class::RefusalUnseen
                    | Class::ClosedAfterInterrupted
            )
    }
}

/// The class of one request and, for the samples, why.
#[derive(Debug)]
struct Outcome {
    class: Class,
    detail: String,
}

impl Outcome {
    fn new(class: Class, detail: impl Into<String>) -> Self {
        Self {
            class,
            detail: detail.into(),
        }
    }
}

/// Milliseconds since the Unix epoch: the clock the script's events use.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------
// The script's instance events.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InstanceState {
    Up,
    Down,
    /// Up, but started with `--fail-after-tokens`: it drops every reply part-way.
    Faulty,
}

#[derive(Debug, Clone)]
struct Event {
    at_ms: u64,
    instance: String,
    state: InstanceState,
}

/// What the script did to the instances, in order. Read again for each failure, so it is
/// always current without a background reader (failures are rare, the file is small).
#[derive(Debug, Default)]
struct Timeline {
    events: Vec<Event>,
}

impl Timeline {
    /// Reads the events file; a missing or unreadable file means "nothing happened".
    fn load(path: Option<&Path>) -> Self {
        let text = path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        Self::parse(&text)
    }

    /// Lines `<unix_ms> <instance> up|down|faulty`; others are skipped (a line being
    /// written may be incomplete).
    fn parse(text: &str) -> Self {
        let mut events: Vec<Event> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let at_ms = parts.next()?.parse().ok()?;
                let instance = parts.next()?.to_string();
                let state = match parts.next()? {
                    "up" => InstanceState::Up,
                    "down" => InstanceState::Down,
                    "faulty" => InstanceState::Faulty,
                    _ => return None,
                };
                Some(Event {
                    at_ms,
                    instance,
                    state,
                })
            })
            .collect();
        events.sort_by_key(|e| e.at_ms);
        Self { events }
    }

    /// Spans during which no instance was up (faulty ones count as up: the gateway sees
    /// them healthy), each stretched by `settle_ms` for the gateway to notice the return.
    fn all_down_windows(&self, settle_ms: u64) -> Vec<(u64, u64)> {
        let mut live: BTreeMap<&str, bool> = BTreeMap::new();
        let mut windows = Vec::new();
        let mut down_since = None;
        for event in &self.events {
            live.insert(&event.instance, event.state != InstanceState::Down);
            let any_up = live.values().any(|up| *up);
            match (any_up, down_since) {
                (false, None) => down_since = Some(event.at_ms),
                (true, Some(since)) => {
                    windows.push((since, event.at_ms.saturating_add(settle_ms)));
                    down_since = None;
                }
                _ => {}
            }
        }
        if let Some(since) = down_since {
            windows.push((since, u64::MAX));
        }
        windows
    }

    /// Whether every instance was down at some point of `[start, end]`.
    fn all_down_during(&self, start: u64, end: u64, settle_ms: u64) -> bool {
        self.all_down_windows(settle_ms)
            .iter()
            .any(|(from, to)| *from <= end && start <= *to)
    }

    /// Whether an instance died (was killed) during `[start, end]`, or a faulty instance
    /// was up then: either can take a request down after the gateway sent it on, which no
    /// retry may undo (the request was delivered).
    fn upstream_lost_during(&self, start: u64, end: u64) -> bool {
        let killed = self.events.iter().any(|e| {
            e.state == InstanceState::Down && start <= e.at_ms && e.at_ms <= end.saturating_add(50)
        });
        killed || self.faulty_during(start, end)
    }

    fn faulty_during(&self, start: u64, end: u64) -> bool {
        let mut faulty_since: BTreeMap<&str, u64> = BTreeMap::new();
        for event in &self.events {
            if event.at_ms > end {
                break;
            }
            match event.state {
                InstanceState::Faulty => {
                    faulty_since.insert(&event.instance, event.at_ms);
                }
                _ => {
                    if faulty_since.remove(event.instance.as_str()).is_some()
                        && event.at_ms >= start
                    {
                        return true;
                    }
                }
            }
        }
        !faulty_since.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// Reading streams.

/// Follows a stream's lines as they arrive, keeping only what judging its end needs.
#[derive(Debug)]
struct LineReader {
    framing: Framing,
    pending: Vec<u8>,
    /// NDJSON lines or SSE `data:` payloads seen whole.
    lines: u64,
    /// The last whole line (NDJSON) or `data:` payload (SSE).
    last: Option<Vec<u8>>,
    /// A line before the last one was not valid JSON (a half line passed on mid-stream).
    bad_inner_line: bool,
    /// An SSE chunk carried `usage`.
    usage_seen: bool,
}

impl LineReader {
    fn new(framing: Framing) -> Self {
        Self {
            framing,
            pending: Vec::new(),
            lines: 0,
            last: None,
            bad_inner_line: false,
            usage_seen: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.line(line.trim_ascii());
        }
    }

    fn line(&mut self, line: &[u8]) {
        let payload = match self.framing {
            Framing::Sse => match line.strip_prefix(b"data:") {
                Some(p) => p.trim_ascii(),
                None => return, // blank separators, comments, `event:` and `id:` fields
            },
            _ if line.is_empty() => return,
            _ => line,
        };
        if let Some(previous) = self.last.take() {
            if !is_json_or_done(&previous) {
                self.bad_inner_line = true;
            }
        }
        if self.framing == Framing::Sse
            && serde_json::from_slice::<Value>(payload).is_ok_and(|v| !v["usage"].is_null())
        {
            self.usage_seen = true;
        }
        self.lines += 1;
        self.last = Some(payload.to_vec());
    }

    /// Whether the last line read is one a stream ends with (`done`, `[DONE]`, an error).
    fn at_end(&self) -> bool {
        self.last.as_deref().is_some_and(|last| {
            last == b"[DONE]"
                || serde_json::from_slice::<Value>(last)
                    .is_ok_and(|v| v["done"] == true || !v["error"].is_null())
        })
    }

    /// A body that ended without a final newline leaves a half line: that is the last line.
    fn finish(&mut self) -> bool {
        let rest = std::mem::take(&mut self.pending);
        let rest = rest.trim_ascii();
        if rest.is_empty() {
            return false;
        }
        if let Some(previous) = self.last.take() {
            if !is_json_or_done(&previous) {
                self.bad_inner_line = true;
            }
        }
        let rest = match self.framing {
            Framing::Sse => rest.strip_prefix(b"data:").unwrap_or(rest).trim_ascii(),
            _ => rest,
        };
        self.lines += 1;
        self.last = Some(rest.to_vec());
        true
    }
}

fn is_json_or_done(payload: &[u8]) -> bool {
    payload == b"[DONE]" || serde_json::from_slice::<Value>(payload).is_ok()
}

/// How a stream's body ended, from the client's side.
#[derive(Debug)]
enum StreamEnd {
    /// The client hung up on purpose after this many lines.
    Cancelled(u64),
    /// The body ended (cleanly, or with a transport error) and was read to that point.
    Ended {
        reader: LineReader,
        half_line: bool,
        transport_error: Option<String>,
    },
}

/// Judges a stream that ended: the end a complete or an interrupted stream must have.
fn judge_stream(kind: Kind, end: StreamEnd) -> Outcome {
    let (reader, half_line, transport_error) = match end {
        StreamEnd::Cancelled(lines) => {
            return Outcome::new(Class::Cancelled, format!("after {lines} lines"))
        }
        StreamEnd::Ended {
            reader,
            half_line,
            transport_error,
        } => (reader, half_line, transport_error),
    };
    let Some(last) = reader.last.as_deref() else {
        let why = transport_error.unwrap_or_else(|| "empty body".into());
        return Outcome::new(Class::StreamCut, format!("no line at all: {why}"));
    };
    let shown = shown(last);
    if half_line || !is_json_or_done(last) {
        return Outcome::new(Class::MalformedLastLine, format!("last line {shown}"));
    }
    if let Some(e) = transport_error {
        return Outcome::new(Class::StreamCut, format!("{e} after line {shown}"));
    }
    if reader.bad_inner_line {
        return Outcome::new(Class::Unexpected, "a line before the last is not JSON");
    }
    judge_last_line(kind, &reader, last)
}

fn judge_last_line(kind: Kind, reader: &LineReader, last: &[u8]) -> Outcome {
    if last == b"[DONE]" && reader.framing == Framing::Sse {
        return judge_usage(kind, reader);
    }
    let value: Value = serde_json::from_slice(last).unwrap_or(Value::Null);
    if !value["error"].is_null() {
        let code = match &value["error"] {
            Value::Object(e) => e.get("code").cloned().unwrap_or(Value::Null),
            _ => value["code"].clone(),
        };
        return if code == "upstream_unavailable" {
            Outcome::new(Class::Interrupted, format!("after {} lines", reader.lines))
        } else {
            Outcome::new(Class::Unexpected, format!("error line {}", shown(last)))
        };
    }
    if reader.framing == Framing::Ndjson && value["done"] == true {
        return Outcome::new(Class::Ok, "");
    }
    Outcome::new(
        Class::StreamCut,
        format!("ended after line {} without an end", shown(last)),
    )
}

/// `/v1` streams: the usage chunk comes when the client asked for it, and only then (the
/// gateway asks for usage itself and must remove the chunk it asked for).
fn judge_usage(kind: Kind, reader: &LineReader) -> Outcome {
    let asked = kind == Kind::OpenAiStreamUsage;
    match (asked, reader.usage_seen) {
        (true, false) => Outcome::new(Class::Unexpected, "asked for usage, got no usage chunk"),
        (false, true) => Outcome::new(Class::Unexpected, "a usage chunk nobody asked for"),
        _ => Outcome::new(Class::Ok, ""),
    }
}

/// At most 120 characters of a line, for the samples.
fn shown(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let cut: String = text.chars().take(120).collect();
    format!("{cut:?}")
}

/// Reads a stream to its end, or hangs up after `cancel_after` lines.
async fn read_stream(
    mut response: Response,
    framing: Framing,
    cancel_after: Option<u64>,
) -> StreamEnd {
    let mut reader = LineReader::new(framing);
    loop {
        match response.chunk().await {
            Ok(Some(data)) => {
                reader.push(&data);
                // A stream whose end was already read is finished, not hung up on: its
                // connection goes back to the pool like any other.
                if cancel_after.is_some_and(|n| reader.lines >= n) && !reader.at_end() {
                    // Dropping the response closes the connection mid-body.
                    return StreamEnd::Cancelled(reader.lines);
                }
            }
            Ok(None) => {
                let half_line = reader.finish();
                return StreamEnd::Ended {
                    reader,
                    half_line,
                    transport_error: None,
                };
            }
            Err(e) => {
                let half_line = reader.finish();
                return StreamEnd::Ended {
                    reader,
                    half_line,
                    transport_error: Some(error_chain(&e)),
                };
            }
        }
    }
}

/// An error with its causes: reqwest's own message alone rarely says what happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// Sending requests.

/// Everything the workers share.
struct Ctx {
    /// For `/readyz` probes; each worker has its own client (see [`worker_client`]).
    probe: Client,
    base: String,
    model: String,
    events: Option<PathBuf>,
    settle_ms: u64,
    cancel_pct: u32,
    timeout: Duration,
    /// Prebuilt, since they are large: an oversize chat and a relay-path chat.
    oversize_body: Bytes,
    large_body: Bytes,
    stats: Mutex<Stats>,
}

impl Ctx {
    fn new(args: &Args) -> Result<Self, String> {
        Ok(Self {
            probe: worker_client()?,
            base: args.url.trim_end_matches('/').to_string(),
            model: args.model.clone(),
            events: args.events.clone(),
            settle_ms: args.settle_ms,
            cancel_pct: args.cancel_pct.min(100),
            timeout: Duration::from_secs(args.timeout_s.max(1)),
            oversize_body: chat_body(&args.model, args.max_body_bytes + 1024, false),
            large_body: chat_body(&args.model, LARGE_CHAT_BYTES, true),
            stats: Mutex::new(Stats {
                problems: problems_file(args.problems.as_deref())?,
                ..Stats::default()
            }),
        })
    }

    fn body(&self, kind: Kind) -> Option<Bytes> {
        let model = self.model.as_str();
        let messages = json!([{ "role": "user", "content": "Say hello in five words." }]);
        let value = match kind {
            Kind::Tags => return None,
            Kind::Oversize => return Some(self.oversize_body.clone()),
            Kind::LargeChatStream => return Some(self.large_body.clone()),
            Kind::Malformed => {
                return Some(Bytes::from(format!(
                    "{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\""
                )))
            }
            Kind::GenerateStream | Kind::Generate => json!({
                "model": model, "prompt": "Say hello.", "stream": kind.streams()
            }),
            Kind::OpenAiStreamUsage => json!({
                "model": model, "messages": messages, "stream": true,
                "stream_options": { "include_usage": true }
            }),
            _ => json!({ "model": model, "messages": messages, "stream": kind.streams() }),
        };
        Some(Bytes::from(value.to_string()))
    }
}

/// The `--problems` file, created (or emptied) now so a bad path fails at once.
fn problems_file(path: Option<&Path>) -> Result<Option<std::fs::File>, String> {
    path.map(|p| std::fs::File::create(p).map_err(|e| format!("--problems {}: {e}", p.display())))
        .transpose()
}

/// One worker's client: HTTP/1.1 with at most one idle keep-alive connection, as a
/// single-user client (an SDK, a chat UI's backend) talks to the gateway.
fn worker_client() -> Result<Client, String> {
    Client::builder()
        .no_proxy() // an HTTP(S)_PROXY in the environment must not sit in between
        .http1_only()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A chat whose message content is `content_bytes` long.
fn chat_body(model: &str, content_bytes: usize, stream: bool) -> Bytes {
    let content = "x".repeat(content_bytes);
    let value = json!({
        "model": model,
        "messages": [{ "role": "user", "content": content }],
        "stream": stream,
    });
    Bytes::from(value.to_string())
}

/// One request from start to class: the exchange bounded by the timeout, then judged
/// with the instance events of its time span.
async fn run_one(
    ctx: &Ctx,
    client: &Client,
    kind: Kind,
    cancel_after: Option<u64>,
    request_id: &str,
) -> Outcome {
    let start = now_ms();
    let bounded = tokio::time::timeout(
        ctx.timeout,
        exchange(ctx, client, kind, cancel_after, request_id),
    );
    let result = match bounded.await {
        Ok(result) => result,
        Err(_) => {
            return Outcome::new(
                Class::TimedOut,
                format!("no complete answer after {:?}", ctx.timeout),
            )
        }
    };
    let end = now_ms();
    match result {
        Answer::Judged(outcome) => outcome,
        Answer::Failed { status, message } => {
            let outcome = classify_failure(ctx, status, &message, start, end);
            if outcome.class == Class::FailedUnstarted {
                let healthy = readyz_healthy(ctx).await;
                return Outcome::new(
                    outcome.class,
                    format!("{} (readyz healthy now: {healthy})", outcome.detail),
                );
            }
            outcome
        }
    }
}

/// What came back, before the instance events are consulted.
enum Answer {
    /// Judged from the answer alone.
    Judged(Outcome),
    /// A 5xx, or no response at all (`status` None): whether it is excused depends on what
    /// the instances were doing meanwhile.
    Failed {
        status: Option<StatusCode>,
        message: String,
    },
}

/// Sends one request and judges what came back from the answer alone where it can:
/// refusals, 2xx streams (read to their end, or hung up on) and documents. 5xx and missing
/// answers are left to [`classify_failure`].
async fn exchange(
    ctx: &Ctx,
    client: &Client,
    kind: Kind,
    cancel_after: Option<u64>,
    request_id: &str,
) -> Answer {
    let method = if kind == Kind::Tags {
        Method::GET
    } else {
        Method::POST
    };
    let mut request = client
        .request(method, format!("{}{}", ctx.base, kind.path()))
        .header("X-Request-Id", request_id);
    if let Some(body) = ctx.body(kind) {
        request = request.header(CONTENT_TYPE, "application/json").body(body);
    }
    let response = match request.send().await {
        Ok(response) => response,
        // The client's own fault, so not a pool failure; but a client that never sees
        // why it was refused (the gateway closed while the body was still coming) is
        // worth counting on its own.
        Err(e) if kind == Kind::Oversize => {
            return Answer::Judged(Outcome::new(
                Class::RefusalUnseen,
                format!("no response: {}", error_chain(&e)),
            ))
        }
        Err(e) => {
            return Answer::Failed {
                status: None,
                message: format!("no response: {}", error_chain(&e)),
            }
        }
    };
    let status = response.status();
    if let Some(expected) = kind.expected_refusal() {
        return Answer::Judged(judge_refusal(status, expected, response).await);
    }
    if status.is_server_error() {
        return Answer::Failed {
            status: Some(status),
            message: error_message(response).await,
        };
    }
    if !status.is_success() {
        let message = error_message(response).await;
        return Answer::Judged(Outcome::new(
            Class::Unexpected,
            format!("{status}: {message}"),
        ));
    }
    if kind.streams() {
        let end = read_stream(response, kind.framing(), cancel_after).await;
        return Answer::Judged(judge_stream(kind, end));
    }
    Answer::Judged(judge_document(kind, response).await)
}

/// Malformed JSON must get 400 and oversize bodies 413, and nothing else.
async fn judge_refusal(status: StatusCode, expected: StatusCode, response: Response) -> Outcome {
    let message = error_message(response).await;
    if status == expected {
        Outcome::new(Class::Expected4xx, "")
    } else {
        Outcome::new(
            Class::Unexpected,
            format!("expected {expected}, got {status}: {message}"),
        )
    }
}

/// A non-streaming 2xx answer: one JSON document of the kind's shape.
async fn judge_document(kind: Kind, response: Response) -> Outcome {
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => return Outcome::new(Class::StreamCut, format!("body: {}", error_chain(&e))),
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return Outcome::new(
            Class::Unexpected,
            format!("body is not JSON: {}", shown(&body)),
        );
    };
    let complete = match kind {
        Kind::Tags => value["models"].is_array(),
        Kind::OpenAi => value["choices"].is_array(),
        _ => value["done"] == true,
    };
    if complete {
        Outcome::new(Class::Ok, "")
    } else {
        Outcome::new(
            Class::Unexpected,
            format!("incomplete body {}", shown(&body)),
        )
    }
}

/// The message of a gateway error body (either error shape), with `Retry-After` when sent.
async fn error_message(response: Response) -> String {
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(" (Retry-After: {v})"))
        .unwrap_or_default();
    let body = tokio::time::timeout(Duration::from_secs(5), response.bytes()).await;
    let body = match body {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return format!("body unreadable: {}{retry_after}", error_chain(&e)),
        Err(_) => return format!("body not sent within 5 s{retry_after}"),
    };
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = match &value["error"] {
        Value::String(m) => m.clone(),
        Value::Object(e) => e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::from_utf8_lossy(&body).chars().take(120).collect(),
    };
    format!("{message}{retry_after}")
}

/// A 5xx or a missing response, judged by what the instances were doing meanwhile:
/// excused when none was up, or (for a 502/504 that is not a connect failure) when the
/// instance holding the request died; otherwise the gateway failed a request it could have
/// served on a healthy instance.
fn classify_failure(
    ctx: &Ctx,
    status: Option<StatusCode>,
    message: &str,
    start: u64,
    end: u64,
) -> Outcome {
    let timeline = Timeline::load(ctx.events.as_deref());
    let what = match status {
        Some(status) => format!("{status}: {message}"),
        None => message.to_string(),
    };
    if timeline.all_down_during(start, end, ctx.settle_ms) {
        return Outcome::new(Class::UnavailableAllDown, what);
    }
    // The gateway names Pingora's error type: ConnectRefused, ConnectTimedout, ... mean
    // nothing was sent, so another instance should have been tried.
    let connect_failure = message.contains("Connect") && !message.contains("ConnectionClosed");
    let after_send = matches!(status, Some(s) if s == StatusCode::BAD_GATEWAY || s == StatusCode::GATEWAY_TIMEOUT);
    if after_send && !connect_failure && timeline.upstream_lost_during(start, end) {
        return Outcome::new(Class::UpstreamDied, what);
    }
    Outcome::new(Class::FailedUnstarted, what)
}

/// `checks.pool.healthy` of `/readyz` right now, for the samples of unexcused failures.
async fn readyz_healthy(ctx: &Ctx) -> String {
    let response = ctx
        .probe
        .get(format!("{}/readyz", ctx.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    let value = match response {
        Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
        Err(e) => return format!("unknown ({e})"),
    };
    value["checks"]["pool"]["healthy"].to_string()
}

// ---------------------------------------------------------------------------------------
// Workers and the tally.

/// SplitMix64: enough randomness to pick request kinds without a dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let bits = uuid::Uuid::new_v4().as_u128();
        Self((bits >> 64) as u64 ^ bits as u64)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick_kind(&mut self) -> Kind {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut roll = self.below(u64::from(total));
        for (kind, weight) in MIX {
            if roll < u64::from(*weight) {
                return *kind;
            }
            roll -= u64::from(*weight);
        }
        Kind::ChatStream
    }
}

/// Counts per kind and class, and a few samples of the classes worth a look.
#[derive(Default)]
struct Stats {
    counts: BTreeMap<(Kind, Class), u64>,
    samples: BTreeMap<Class, Vec<String>>,
    /// Where every sampled-class request is written, when asked (`--problems`).
    problems: Option<std::fs::File>,
    /// Failed unstarted requests sent on the connection an interrupted stream had just
    /// ended on: the gateway closed a connection it had not said it would close.
    failed_after_interrupted: u64,
}

/// Samples kept per class.
const SAMPLES: usize = 8;

impl Stats {
    fn record(
        &mut self,
        kind: Kind,
        outcome: &Outcome,
        previous: Option<Class>,
        request_id: &str,
        at_s: f64,
    ) {
        *self.counts.entry((kind, outcome.class)).or_default() += 1;
        if outcome.class == Class::FailedUnstarted && previous == Some(Class::Interrupted) {
            self.failed_after_interrupted += 1;
        }
        if !outcome.class.sampled() {
            return;
        }
        let previous = previous.map_or("none", Class::name);
        let line = format!(
            "t={at_s:.1}s id={request_id} kind={} {} [previous on this connection: {previous}]",
            kind.name(),
            outcome.detail
        );
        if let Some(file) = self.problems.as_mut() {
            // Best effort: the summary's samples still say what went wrong.
            let _ = writeln!(file, "{} {line}", outcome.class.name());
        }
        let samples = self.samples.entry(outcome.class).or_default();
        if samples.len() < SAMPLES {
            samples.push(line);
        }
    }

    fn class_total(&self, class: Class) -> u64 {
        self.counts
            .iter()
            .filter(|((_, c), _)| *c == class)
            .map(|(_, n)| n)
            .sum()
    }

    fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Pause after a failure, as a client obeying `Retry-After` would, so that an outage is not
/// a busy loop of instant 503s that swamps the counts (and the two cores).
const BACKOFF_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// One client sending requests back to back until the deadline. `client` keeps one
/// connection alive between requests, so `previous` is what that connection carried last.
async fn worker(ctx: Arc<Ctx>, client: Client, index: usize, began: Instant, deadline: Instant) {
    let mut rng = Rng::seeded();
    let mut sequence = 0u64;
    let mut previous = None;
    while Instant::now() < deadline {
        sequence += 1;
        let kind = rng.pick_kind();
        let cancel_after = (kind.streams() && rng.below(100) < u64::from(ctx.cancel_pct))
            .then(|| 1 + rng.below(MAX_LINES_BEFORE_CANCEL));
        let request_id = format!("soak-{index}-{sequence}");
        let mut outcome = run_one(&ctx, &client, kind, cancel_after, &request_id).await;
        // After an instance cut a stream, the gateway ends that stream cleanly and then closes
        // the connection (Pingora 0.9 reuses no client connection after an upstream failure).
        // A request sent on it before the close is seen gets no answer at all: the keep-alive
        // race any HTTP/1.1 server's close has, not a request the gateway dropped. Counted
        // apart, and shown.
        if matches!(outcome.class, Class::FailedUnstarted | Class::RefusalUnseen)
            && previous == Some(Class::Interrupted)
            && outcome.detail.starts_with("no response")
        {
            outcome.class = Class::ClosedAfterInterrupted;
        }
        let at_s = began.elapsed().as_secs_f64();
        match ctx.stats.lock() {
            Ok(mut stats) => stats.record(kind, &outcome, previous, &request_id, at_s),
            Err(poisoned) => {
                poisoned
                    .into_inner()
                    .record(kind, &outcome, previous, &request_id, at_s)
            }
        }
        if matches!(
            outcome.class,
            Class::FailedUnstarted | Class::UnavailableAllDown | Class::UpstreamDied
        ) {
            tokio::time::sleep(BACKOFF_AFTER_FAILURE).await;
        }
        previous = Some(outcome.class);
    }
}

/// The summary: classes with their meaning, the split by kind, samples, and the checks.
/// Returns whether every must-be-0 class is 0.
fn report(stats: &Stats, elapsed: Duration, concurrency: usize) -> bool {
    let total = stats.total();
    println!(
        "corral-soak: {total} requests in {:.1} s from {concurrency} workers ({:.1} rps)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
    );
    println!("{:<22} {:>8}  meaning", "class", "count");
    for class in Class::ALL {
        println!(
            "{:<22} {:>8}  {}",
            class.name(),
            stats.class_total(class),
            class.meaning()
        );
    }
    println!("by kind:");
    let mut by_kind: BTreeMap<Kind, Vec<String>> = BTreeMap::new();
    for ((kind, class), n) in &stats.counts {
        by_kind
            .entry(*kind)
            .or_default()
            .push(format!("{}={n}", class.name()));
    }
    for (kind, parts) in by_kind {
        println!("  {:<22} {}", kind.name(), parts.join(" "));
    }
    if stats.failed_after_interrupted > 0 {
        println!(
            "failed_unstarted on a connection reused right after an interrupted stream: {}",
            stats.failed_after_interrupted
        );
    }
    for (class, samples) in &stats.samples {
        for sample in samples {
            println!("sample {} {sample}", class.name());
        }
    }
    let mut passed = total > 0;
    if total == 0 {
        println!("CHECK requests > 0: FAIL (no request was made)");
    }
    for class in Class::ALL.into_iter().filter(|c| c.must_be_zero()) {
        let n = stats.class_total(class);
        let verdict = if n == 0 { "PASS" } else { "FAIL" };
        println!("CHECK {} = {n} (must be 0): {verdict}", class.name());
        passed &= n == 0;
    }
    passed
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let ctx = match Ctx::new(&args) {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            eprintln!("corral-soak: {e}");
            return ExitCode::from(2);
        }
    };
    let concurrency = args.concurrency.max(1);
    let clients = match (0..concurrency)
        .map(|_| worker_client())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(clients) => clients,
        Err(e) => {
            eprintln!("corral-soak: {e}");
            return ExitCode::from(2);
        }
    };
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(args.duration_s.max(0.0));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| tokio::spawn(worker(Arc::clone(&ctx), client, i, began, deadline)))
        .collect();
    for w in workers {
        if let Err(e) = w.await {
            eprintln!("corral-soak: a worker failed: {e}");
        }
    }
    let elapsed = began.elapsed();
    let passed = match ctx.stats.lock() {
        Ok(stats) => report(&stats, elapsed, concurrency),
        Err(poisoned) => report(&poisoned.into_inner(), elapsed, concurrency),
    };
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(framing: Framing, body: &str, transport_error: Option<&str>) -> StreamEnd {
        let mut reader = LineReader::new(framing);
        reader.push(body.as_bytes());
        let half_line = reader.finish();
        StreamEnd::Ended {
            reader,
            half_line,
            transport_error: transport_error.map(String::from),
        }
    }

    fn class_of(kind: Kind, body: &str) -> Class {
        judge_stream(kind, ended(kind.framing(), body, None)).class
    }

    #[test]
    fn ndjson_streams_are_judged_by_their_last_line() {
        let done = "{\"response\":\"a\"}\n{\"done\":true}\n";
        assert_eq!(class_of(Kind::ChatStream, done), Class::Ok);
        let interrupted =
            "{\"response\":\"a\"}\n{\"error\":\"gone\",\"code\":\"upstream_unavailable\"}\n";
        assert_eq!(class_of(Kind::ChatStream, interrupted), Class::Interrupted);
        let half = "{\"response\":\"a\"}\n{\"respo";
        assert_eq!(class_of(Kind::ChatStream, half), Class::MalformedLastLine);
        let cut = "{\"response\":\"a\"}\n";
        assert_eq!(class_of(Kind::ChatStream, cut), Class::StreamCut);
        assert_eq!(class_of(Kind::ChatStream, ""), Class::StreamCut);
    }

    #[test]
    fn sse_streams_end_in_done_or_an_error_event() {
        let chunk = "data: {\"choices\":[]}\n\n";
        let usage = "data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n";
        let done = format!("{chunk}data: [DONE]\n\n");
        assert_eq!(class_of(Kind::OpenAiStream, &done), Class::Ok);
        assert_eq!(class_of(Kind::OpenAiStreamUsage, &done), Class::Unexpected);
        let with_usage = format!("{chunk}{usage}data: [DONE]\n\n");
        assert_eq!(class_of(Kind::OpenAiStreamUsage, &with_usage), Class::Ok);
        assert_eq!(class_of(Kind::OpenAiStream, &with_usage), Class::Unexpected);
        let error = format!(
            "{chunk}data: {{\"error\":{{\"message\":\"m\",\"code\":\"upstream_unavailable\"}}}}\n\n"
        );
        assert_eq!(class_of(Kind::OpenAiStream, &error), Class::Interrupted);
        assert_eq!(
            class_of(Kind::OpenAiStream, "data: {\"choi"),
            Class::MalformedLastLine
        );
    }

    #[test]
    fn the_end_of_a_stream_is_known_from_its_last_line() {
        let mut reader = LineReader::new(Framing::Ndjson);
        reader.push(b"{\"response\":\"a\"}\n");
        assert!(!reader.at_end());
        reader.push(b"{\"error\":\"gone\",\"code\":\"upstream_unavailable\"}\n");
        assert!(reader.at_end());
        let mut reader = LineReader::new(Framing::Sse);
        reader.push(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
        assert!(reader.at_end());
    }

    #[test]
    fn a_transport_error_after_a_whole_line_is_a_cut_stream() {
        let end = ended(Framing::Ndjson, "{\"response\":\"a\"}\n", Some("reset"));
        assert_eq!(judge_stream(Kind::ChatStream, end).class, Class::StreamCut);
        let end = ended(
            Framing::Ndjson,
            "{\"response\":\"a\"}\n{\"re",
            Some("reset"),
        );
        assert_eq!(
            judge_stream(Kind::ChatStream, end).class,
            Class::MalformedLastLine
        );
    }

    #[test]
    fn all_down_windows_last_until_an_instance_is_back_and_settled() {
        let timeline = Timeline::parse(
            "0 a up\n0 b up\n100 a down\n200 b down\n300 b up\n400 a faulty\n500 a down\n",
        );
        assert_eq!(timeline.all_down_windows(50), vec![(200, 350)]);
        assert!(timeline.all_down_during(340, 360, 50));
        assert!(!timeline.all_down_during(351, 360, 50));
        assert!(!timeline.all_down_during(0, 150, 50));
    }

    #[test]
    fn lost_upstreams_are_kills_inside_the_request_or_faulty_lives_overlapping_it() {
        let timeline = Timeline::parse("0 a up\n0 b up\n100 a down\n300 a faulty\n500 a down\n");
        assert!(timeline.upstream_lost_during(50, 150));
        assert!(!timeline.upstream_lost_during(160, 250));
        assert!(timeline.upstream_lost_during(250, 350));
        assert!(timeline.upstream_lost_during(450, 600));
        assert!(!timeline.upstream_lost_during(600, 700));
    }
}
