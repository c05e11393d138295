//! What a [`HostileUpstream`](super::HostileUpstream) does with a model request.
//!
//! Each variant is one way an Ollama instance (or something pretending to be one) has
//! hurt, or could hurt, a gateway that trusts it: a stream cut mid-line, a line too big
//! to buffer, token counts that overflow a sum, a stream reporting usage twice, an
//! instance that never answers. Health probes stay healthy whatever the behaviour, so
//! the gateway keeps routing to the instance and the test reaches the failure.

use std::time::Duration;

use super::replies::{Counts, ModelRequest, Reply, PROMPT_TOKENS};

/// How long a cut reply waits after its half line before closing, so the gateway has
/// read the partial bytes before it sees the connection end.
pub(crate) const CUT_PAUSE: Duration = Duration::from_millis(50);

/// The answer to every model request (any POST) until the next
/// [`set_behaviour`](super::HostileUpstream::set_behaviour).
///
/// Streams (`"stream"` absent or true on `/api/*`, true on `/v1/*`) are NDJSON on
/// `/api/*` and SSE on `/v1/*`; content token `i` is `"tok{i} "`. Other requests get one
/// JSON object in Ollama's or OpenAI's shape. The prompt count is [`PROMPT_TOKENS`]
/// unless a variant says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// A well-formed reply of `tokens` content lines and a final chunk with
    /// P = [`PROMPT_TOKENS`] and E = `tokens`: the baseline a hostile test compares with.
    Normal { tokens: usize },
    /// An instance dying mid-line: `lines` complete content lines, then the first half
    /// of the next one as a chunk of its own, a [`CUT_PAUSE`] wait, and a close without
    /// the chunked terminator. A non-streaming request gets its full `Content-Length`
    /// but only half the body. Tests that the gateway neither forwards nor counts a
    /// half line as if it were whole, and ends the client's stream cleanly.
    CutMidLine { lines: usize },
    /// One content line whose content is `bytes` long (`"xxx…"`), then a normal final
    /// chunk: tests the gateway's bound on its partial-line buffer.
    GiantLine { bytes: usize },
    /// `lines` content lines, then a final chunk reporting exactly these counts (written
    /// verbatim, `u64::MAX` included; on `/v1` `total_tokens` is their exact sum, which
    /// may exceed `u64`): tests overflow and quota arithmetic.
    Counts {
        prompt: u64,
        completion: u64,
        lines: usize,
    },
    /// Two content lines, then the final part twice, with (prompt, completion) counts
    /// `first` then `second`. On SSE the final part is the finish chunk plus, when the
    /// request asked `stream_options.include_usage`, the usage chunk. A non-streaming
    /// request gets both objects in one body, separated by a newline. Tests that usage
    /// is counted once.
    DuplicateDone {
        first: (u64, u64),
        second: (u64, u64),
    },
    /// Reads the request and never answers; the connection stays open until the client
    /// closes it or the upstream stops. Tests the gateway's upstream timeouts.
    NeverAnswer,
    /// An immediate response with this status and body (`Content-Type:
    /// application/json`), e.g. 500 `{"error":"boom"}` or Ollama's 503 busy answer.
    Status { code: u16, body: String },
    /// These exact bytes as the whole response, then a close: for anything the other
    /// variants cannot say (bad status lines, conflicting framing, garbage).
    Raw(Vec<u8>),
    /// A normal reply of `tokens` content lines with `token_delay` between lines (a
    /// non-streaming request waits `tokens × token_delay`); a client going away is
    /// noticed within one delay. Tests cancellation and slow instances.
    Delay {
        tokens: usize,
        token_delay: Duration,
    },
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::Normal { tokens: 4 }
    }
}

/// What goes on the wire for one model request, decided before the first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Script {
    /// A 200 with a chunked body: one chunk per line, `delay` between lines, then the
    /// terminator, or with `cut` that chunk, a pause and a close instead.
    Stream {
        content_type: &'static str,
        lines: Vec<Vec<u8>>,
        delay: Duration,
        cut: Option<Vec<u8>>,
    },
    /// A JSON body with `Content-Length`, after `delay`; with `cut`, only its first
    /// half, a pause and a close.
    Whole {
        status: u16,
        body: Vec<u8>,
        delay: Duration,
        cut: bool,
    },
    Raw(Vec<u8>),
    Hold,
}

impl Behaviour {
    pub(crate) fn script(&self, request: &ModelRequest) -> Script {
        match self {
            Self::Normal { tokens } => play(&Reply::normal(*tokens), request, Duration::ZERO),
            Self::CutMidLine { lines } => cut(&Reply::normal(lines + 1), request, *lines),
            Self::GiantLine { bytes } => play(&giant(*bytes), request, Duration::ZERO),
            Self::Counts {
                prompt,
                completion,
                lines,
            } => play(
                &counted(*prompt, *completion, *lines),
                request,
                Duration::ZERO,
            ),
            Self::DuplicateDone { first, second } => {
                play(&duplicated(*first, *second), request, Duration::ZERO)
            }
            Self::NeverAnswer => Script::Hold,
            Self::Status { code, body } => Script::Whole {
                status: *code,
                body: body.clone().into_bytes(),
                delay: Duration::ZERO,
                cut: false,
            },
            Self::Raw(bytes) => Script::Raw(bytes.clone()),
            Self::Delay {
                tokens,
                token_delay,
            } => play(&Reply::normal(*tokens), request, *token_delay),
        }
    }
}

fn giant(bytes: usize) -> Reply {
    Reply {
        contents: vec!["x".repeat(bytes)],
        done: vec![Counts::new(PROMPT_TOKENS, 1)],
    }
}

fn counted(prompt: u64, completion: u64, lines: usize) -> Reply {
    Reply {
        done: vec![Counts::new(prompt, completion)],
        ..Reply::normal(lines)
    }
}

fn duplicated(first: (u64, u64), second: (u64, u64)) -> Reply {
    Reply {
        done: vec![
            Counts::new(first.0, first.1),
            Counts::new(second.0, second.1),
        ],
        ..Reply::normal(2)
    }
}

/// The reply as a stream or a whole body, as the request asked.
fn play(reply: &Reply, request: &ModelRequest, delay: Duration) -> Script {
    if request.stream {
        return Script::Stream {
            content_type: request.dialect.stream_content_type(),
            lines: reply.stream_lines(request),
            delay,
            cut: None,
        };
    }
    let lines = u32::try_from(reply.contents.len()).unwrap_or(u32::MAX);
    Script::Whole {
        status: 200,
        body: reply.whole_body(request),
        delay: delay.saturating_mul(lines),
        cut: false,
    }
}

/// The reply's first `keep` lines, then half of the next one.
fn cut(reply: &Reply, request: &ModelRequest, keep: usize) -> Script {
    match play(reply, request, Duration::ZERO) {
        Script::Stream {
            content_type,
            mut lines,
            delay,
            ..
        } => {
            let next = lines.get(keep).cloned().unwrap_or_default();
            lines.truncate(keep);
            Script::Stream {
                content_type,
                lines,
                delay,
                cut: Some(next[..next.len() / 2].to_vec()),
            }
        }
        Script::Whole {
            status,
            body,
            delay,
            ..
        } => Script::Whole {
            status,
            body,
            delay,
            cut: true,
        },
        other => other,
    }
}
