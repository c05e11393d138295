//! Ollama's OpenAI-compatible API (`/v1/*`): `stream` defaults to false, streams are
//! SSE ending in `data: [DONE]`, and usage is streamed only with
//! `stream_options.include_usage`, in an extra chunk with no choices.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::generation::{
    dropped_connection, sse_event, streaming_response, Failure, Generation, Plan, Step, Summary,
};
use super::gpu::{job_for, PromptKind};
use super::native::{admit, embedding_work};
use super::request::{
    int_field, json_response, message_texts, prompt_tokens, read_model_request, stream_flag,
    string_or_list, ApiError,
};
use super::shapes::{embedding, model_created_unix, owner, unix_now};
use super::state::Shared;

type AppState = State<Arc<Shared>>;

const FINGERPRINT: &str = "fp_ollama";

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<&Summary> for Usage {
    fn from(s: &Summary) -> Self {
        Self {
            prompt_tokens: s.prompt_eval_count,
            completion_tokens: s.eval_count,
            total_tokens: s.prompt_eval_count + s.eval_count,
        }
    }
}

#[derive(Serialize)]
struct Delta<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Delta<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<Delta<'a>>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    finish_reason: Option<&'static str>,
}

/// `chat.completion`, `chat.completion.chunk`, `text_completion`: one envelope.
#[derive(Serialize)]
struct Envelope<'a, C> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// What a route needs to know to render its chunks.
struct Reply {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
}

impl Reply {
    fn new(shared: &Shared, prefix: &str, model: String, request: &Value) -> Self {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Self {
            id: format!("{prefix}-{}", shared.next_id()),
            model,
            created: unix_now(),
            include_usage,
        }
    }

    fn envelope<C>(&self, object: &'static str, choices: Vec<C>) -> Envelope<'_, C> {
        Envelope {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            system_fingerprint: FINGERPRINT,
            choices,
            usage: None,
        }
    }

    /// The stream's tail: the usage chunk when asked for, then `[DONE]`.
    fn tail(&self, object: &'static str, summary: &Summary, out: &mut Vec<u8>) {
        if self.include_usage {
            let mut usage = self.envelope::<TextChoice>(object, Vec::new());
            usage.usage = Some(Usage::from(summary));
            out.extend(sse_event(&usage));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

fn finish_reason(summary: &Summary) -> &'static str {
    if summary.done_reason == "length" {
        "length"
    } else {
        "stop"
    }
}

fn chat_choice<'a>(content: &'a str, finish: Option<&'static str>, whole: bool) -> ChatChoice<'a> {
    let delta = Delta {
        role: "assistant",
        content,
    };
    ChatChoice {
        index: 0,
        message: whole.then_some(Delta {
            role: "assistant",
            content,
        }),
        delta: (!whole).then_some(delta),
        finish_reason: finish,
    }
}

pub(crate) async fn chat_completions(State(shared): AppState, body: Bytes) -> Response {
    let (request, model) = match read_model_request(&body) {
        Ok(parsed) => parsed,
        Err(e) => return e.openai(),
    };
    if let Err(e) = admit(&shared, &model) {
        return e.openai();
    }
    let texts = message_texts(&request);
    let cap = int_field(Some(&request), &["max_tokens", "max_completion_tokens"]);
    let plan = Plan::new(&shared.settings, prompt_tokens(&texts), cap);
    let job = match job_for(&shared, &model, &request, PromptKind::Messages) {
        Ok(job) => job,
        Err(e) => return e.openai(),
    };
    let reply = Reply::new(&shared, "chatcmpl", model, &request);
    let generation = Generation::start(&shared, plan, job);
    if stream_flag(&request, false) {
        const OBJECT: &str = "chat.completion.chunk";
        return streaming_response(generation, "text/event-stream", move |step| match step {
            Step::Token(t) => {
                sse_event(&reply.envelope(OBJECT, vec![chat_choice(&t, None, false)])).into()
            }
            Step::Done(s) => {
                let last = vec![chat_choice("", Some(finish_reason(&s)), false)];
                let mut out = sse_event(&reply.envelope(OBJECT, last));
                reply.tail(OBJECT, &s, &mut out);
                out.into()
            }
            Step::Error(message) => sse_event(&ApiError::internal(message).openai_body()).into(),
        })
        .await;
    }
    match generation.finish().await {
        Ok((text, s)) => {
            let choice = chat_choice(&text, Some(finish_reason(&s)), true);
            let mut whole = reply.envelope("chat.completion", vec![choice]);
            whole.usage = Some(Usage::from(&s));
            json_response(StatusCode::OK, &whole)
        }
        Err(Failure::Died) => dropped_connection(),
        Err(Failure::Error(message)) => ApiError::internal(message).openai(),
    }
}

pub(crate) async fn completions(State(shared): AppState, body: Bytes) -> Response {
    let (request, model) = match read_model_request(&body) {
        Ok(parsed) => parsed,
        Err(e) => return e.openai(),
    };
    if let Err(e) = admit(&shared, &model) {
        return e.openai();
    }
    let prompts = string_or_list(request.get("prompt"));
    let cap = int_field(Some(&request), &["max_tokens"]);
    let plan = Plan::new(&shared.settings, prompt_tokens(&prompts), cap);
    let job = match job_for(&shared, &model, &request, PromptKind::Completion) {
        Ok(job) => job,
        Err(e) => return e.openai(),
    };
    let reply = Reply::new(&shared, "cmpl", model, &request);
    let generation = Generation::start(&shared, plan, job);
    const OBJECT: &str = "text_completion";
    if stream_flag(&request, false) {
        return streaming_response(generation, "text/event-stream", move |step| match step {
            Step::Token(t) => sse_event(&reply.envelope(OBJECT, vec![choice(&t, None)])).into(),
            Step::Done(s) => {
                let last = vec![choice("", Some(finish_reason(&s)))];
                let mut out = sse_event(&reply.envelope(OBJECT, last));
                reply.tail(OBJECT, &s, &mut out);
                out.into()
            }
            Step::Error(message) => sse_event(&ApiError::internal(message).openai_body()).into(),
        })
        .await;
    }
    match generation.finish().await {
        Ok((text, s)) => {
            let mut whole = reply.envelope(OBJECT, vec![choice(&text, Some(finish_reason(&s)))]);
            whole.usage = Some(Usage::from(&s));
            json_response(StatusCode::OK, &whole)
        }
        Err(Failure::Died) => dropped_connection(),
        Err(Failure::Error(message)) => ApiError::internal(message).openai(),
    }
}

pub(crate) async fn embeddings(State(shared): AppState, body: Bytes) -> Response {
    let (request, model) = match read_model_request(&body) {
        Ok(parsed) => parsed,
        Err(e) => return e.openai(),
    };
    if let Err(e) = admit(&shared, &model) {
        return e.openai();
    }
    let inputs = string_or_list(request.get("input"));
    if inputs.is_empty() {
        return ApiError::bad_request("invalid input").openai();
    }
    let _in_flight = embedding_work(&shared).await;
    let count = prompt_tokens(&inputs);
    shared.add_prompt_tokens(count);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({ "object": "embedding", "embedding": embedding(t), "index": i }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": { "prompt_tokens": count, "total_tokens": count },
        }),
    )
}

fn choice<'a>(text: &'a str, finish: Option<&'static str>) -> TextChoice<'a> {
    TextChoice {
        text,
        index: 0,
        finish_reason: finish,
    }
}

fn model_object(name: &str) -> Value {
    json!({
        "id": name,
        "object": "model",
        "created": model_created_unix(),
        "owned_by": owner(name),
    })
}

pub(crate) async fn models(State(shared): AppState) -> Response {
    let data: Vec<Value> = shared.models().iter().map(|m| model_object(m)).collect();
    json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

/// `/v1/models/{model}`: names hold `:` and may hold `/`, hence a wildcard route.
pub(crate) async fn model(State(shared): AppState, Path(name): Path<String>) -> Response {
    if !shared.has_model(&name) {
        return ApiError::model_not_found(&name).openai();
    }
    json_response(StatusCode::OK, &model_object(&name))
}
