//! The bytes of Ollama's replies: probe answers, NDJSON lines, SSE events, whole bodies.
//!
//! Written with `format!` rather than serde so key order matches Ollama's (a half line
//! starts `{"model":…`) and counts go out verbatim, `u64::MAX` and sums beyond it
//! included. Strings are escaped through `serde_json`.

use serde_json::Value;

/// The prompt token count of every reply whose behaviour does not set one.
pub const PROMPT_TOKENS: u64 = 10;

const CREATED_AT: &str = "2024-01-01T00:00:00Z";
const JSON: &str = "application/json; charset=utf-8";

/// Which wire shape a model request gets, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `/api/chat` and any other POST outside `/v1/`: `message.content`.
    NativeChat,
    /// `/api/generate`: `response` instead of `message`.
    NativeGenerate,
    /// `/v1/chat/completions` and any other POST under `/v1/`.
    OpenAiChat,
    /// `/v1/completions`: `text` instead of `delta`.
    OpenAiCompletion,
}

impl Dialect {
    fn for_path(path: &str) -> Self {
        match path {
            "/api/generate" => Self::NativeGenerate,
            "/v1/completions" => Self::OpenAiCompletion,
            p if p.starts_with("/v1/") => Self::OpenAiChat,
            _ => Self::NativeChat,
        }
    }

    fn is_openai(self) -> bool {
        matches!(self, Self::OpenAiChat | Self::OpenAiCompletion)
    }

    pub fn stream_content_type(self) -> &'static str {
        if self.is_openai() {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        }
    }

    fn id(self) -> &'static str {
        match self {
            Self::OpenAiCompletion => "cmpl-1",
            _ => "chatcmpl-1",
        }
    }

    fn chunk_object(self) -> &'static str {
        match self {
            Self::OpenAiCompletion => "text_completion",
            _ => "chat.completion.chunk",
        }
    }
}

/// What a reply needs to know about the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelRequest {
    pub dialect: Dialect,
    /// Ollama's defaults: streaming unless `"stream": false` on `/api/*`, only with
    /// `"stream": true` on `/v1/*`.
    pub stream: bool,
    pub include_usage: bool,
    /// The request's `model`, echoed back; `default_model` when it has none.
    pub model: String,
}

impl ModelRequest {
    /// Never fails: a body that is not JSON gets the defaults, since hostile tests send
    /// such bodies on purpose.
    pub fn parse(path: &str, body: &[u8], default_model: &str) -> Self {
        let dialect = Dialect::for_path(path);
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let stream = json.get("stream").and_then(Value::as_bool);
        let include_usage = json
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool);
        Self {
            dialect,
            stream: stream.unwrap_or(!dialect.is_openai()),
            include_usage: include_usage.unwrap_or(false),
            model: json
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(default_model)
                .to_string(),
        }
    }
}

/// Prompt and completion token counts as a final chunk reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub prompt: u64,
    pub completion: u64,
}

impl Counts {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Self { prompt, completion }
    }
}

/// A reply before it is given a shape: content pieces, then one final part per entry
/// of `done` (normally one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub contents: Vec<String>,
    pub done: Vec<Counts>,
}

impl Reply {
    /// `tokens` pieces `"tok{i} "` and one final part counting them.
    pub fn normal(tokens: usize) -> Self {
        Self {
            contents: (0..tokens).map(|i| format!("tok{i} ")).collect(),
            done: vec![Counts::new(PROMPT_TOKENS, tokens as u64)],
        }
    }

    /// One NDJSON line or SSE event per element, each ending in its newline(s).
    pub fn stream_lines(&self, request: &ModelRequest) -> Vec<Vec<u8>> {
        let content = self.contents.iter().map(|c| content_line(request, c));
        let done = self.done.iter().flat_map(|c| done_lines(request, *c));
        let end = request
            .dialect
            .is_openai()
            .then(|| b"data: [DONE]\n\n".to_vec());
        content.chain(done).chain(end).collect()
    }

    /// One JSON object per final part, newline-separated: the whole text in each.
    pub fn whole_body(&self, request: &ModelRequest) -> Vec<u8> {
        let text = self.contents.concat();
        let objects: Vec<String> = self
            .done
            .iter()
            .map(|c| whole_object(request, &text, *c))
            .collect();
        objects.join("\n").into_bytes()
    }
}

fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}

fn ndjson(object: String) -> Vec<u8> {
    format!("{object}\n").into_bytes()
}

fn sse(object: String) -> Vec<u8> {
    format!("data: {object}\n\n").into_bytes()
}

fn content_line(request: &ModelRequest, content: &str) -> Vec<u8> {
    if request.dialect.is_openai() {
        sse(openai_chunk(request, content, "null"))
    } else {
        ndjson(native_object(request, content, None))
    }
}

/// The final part: Ollama's done line, or OpenAI's finish chunk and (when asked) usage.
fn done_lines(request: &ModelRequest, counts: Counts) -> Vec<Vec<u8>> {
    if !request.dialect.is_openai() {
        return vec![ndjson(native_object(request, "", Some(counts)))];
    }
    let mut lines = vec![sse(openai_chunk(request, "", r#""stop""#))];
    if request.include_usage {
        lines.push(sse(usage_chunk(request, counts)));
    }
    lines
}

fn whole_object(request: &ModelRequest, text: &str, counts: Counts) -> String {
    if !request.dialect.is_openai() {
        return native_object(request, text, Some(counts));
    }
    let (object, choice) = match request.dialect {
        Dialect::OpenAiCompletion => ("text_completion", format!(r#""text":{}"#, quoted(text))),
        _ => (
            "chat.completion",
            format!(
                r#""message":{{"role":"assistant","content":{}}}"#,
                quoted(text)
            ),
        ),
    };
    format!(
        r#"{{"id":"{}","object":"{object}","created":1,"model":{},"choices":[{{"index":0,{choice},"finish_reason":"stop"}}],"usage":{}}}"#,
        request.dialect.id(),
        quoted(&request.model),
        usage(counts),
    )
}

/// An Ollama line; with `done`, the final one carrying the counts.
fn native_object(request: &ModelRequest, content: &str, done: Option<Counts>) -> String {
    let text = match request.dialect {
        Dialect::NativeGenerate => format!(r#""response":{}"#, quoted(content)),
        _ => format!(
            r#""message":{{"role":"assistant","content":{}}}"#,
            quoted(content)
        ),
    };
    let tail = match done {
        None => r#""done":false"#.to_string(),
        Some(c) => format!(
            r#""done":true,"done_reason":"stop","total_duration":1,"load_duration":1,"prompt_eval_count":{},"prompt_eval_duration":1,"eval_count":{},"eval_duration":1"#,
            c.prompt, c.completion
        ),
    };
    format!(
        r#"{{"model":{},"created_at":"{CREATED_AT}",{text},{tail}}}"#,
        quoted(&request.model)
    )
}

/// An OpenAI stream chunk; `finish` is the JSON of `finish_reason`.
fn openai_chunk(request: &ModelRequest, content: &str, finish: &str) -> String {
    let piece = match request.dialect {
        Dialect::OpenAiCompletion => format!(r#""text":{}"#, quoted(content)),
        _ => format!(
            r#""delta":{{"role":"assistant","content":{}}}"#,
            quoted(content)
        ),
    };
    format!(
        r#"{{"id":"{}","object":"{}","created":1,"model":{},"choices":[{{"index":0,{piece},"finish_reason":{finish}}}]}}"#,
        request.dialect.id(),
        request.dialect.chunk_object(),
        quoted(&request.model),
    )
}

fn usage_chunk(request: &ModelRequest, counts: Counts) -> String {
    format!(
        r#"{{"id":"{}","object":"{}","created":1,"model":{},"choices":[],"usage":{}}}"#,
        request.dialect.id(),
        request.dialect.chunk_object(),
        quoted(&request.model),
        usage(counts),
    )
}

/// `total_tokens` is the exact sum, which can exceed `u64` when a behaviour says so.
fn usage(c: Counts) -> String {
    let total = u128::from(c.prompt) + u128::from(c.completion);
    format!(
        r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{total}}}"#,
        c.prompt, c.completion
    )
}

/// Content type and body of a health probe or catalog request (GET or HEAD), or `None`
/// for a path Ollama does not serve.
pub(crate) fn probe(path: &str, models: &[String]) -> Option<(&'static str, String)> {
    let body = match path {
        "/" => return Some(("text/plain; charset=utf-8", "Ollama is running".into())),
        "/api/tags" => tags(models),
        "/api/ps" => r#"{"models":[]}"#.to_string(),
        "/api/version" => r#"{"version":"0.12.0"}"#.to_string(),
        "/v1/models" => openai_models(models),
        _ => return None,
    };
    Some((JSON, body))
}

fn tags(models: &[String]) -> String {
    let entries: Vec<String> = models
        .iter()
        .map(|m| {
            let name = quoted(m);
            format!(
                r#"{{"name":{name},"model":{name},"modified_at":"{CREATED_AT}","size":1,"digest":"x","details":{{}}}}"#
            )
        })
        .collect();
    format!(r#"{{"models":[{}]}}"#, entries.join(","))
}

fn openai_models(models: &[String]) -> String {
    let entries: Vec<String> = models
        .iter()
        .map(|m| {
            format!(
                r#"{{"id":{},"object":"model","created":1,"owned_by":"library"}}"#,
                quoted(m)
            )
        })
        .collect();
    format!(r#"{{"object":"list","data":[{}]}}"#, entries.join(","))
}

/// The content type of every JSON answer.
pub(crate) fn json_content_type() -> &'static str {
    JSON
}
