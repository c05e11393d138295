//! Ollama's native API (`/api/*`): the shapes of docs/api.md in ollama/ollama,
//! with fields in the order Ollama's Go structs write them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::generation::{
    dropped_connection, ndjson_line, streaming_response, Failure, Generation, Plan, Step, Summary,
};
use super::gpu::{job_for, PromptKind};
use super::request::{
    int_field, json_response, message_texts, model_of, parse_body, prompt_tokens,
    read_model_request, stream_flag, string_or_list, ApiError,
};
use super::shapes::{embedding, ps_entry, rfc3339_now, show_body, tags_entry};
use super::state::Shared;
use crate::in_flight::InFlight;

type AppState = State<Arc<Shared>>;

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

/// A line of `/api/chat`, streamed or whole.
#[derive(Serialize)]
struct ChatChunk<'a> {
    model: &'a str,
    created_at: String,
    message: Message<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    done: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metrics: Option<&'a Summary>,
}

/// A line of `/api/generate`, streamed or whole.
#[derive(Serialize)]
struct GenerateChunk<'a> {
    model: &'a str,
    created_at: String,
    response: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<[u32; 3]>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metrics: Option<&'a Summary>,
}

fn chat_chunk<'a>(model: &'a str, content: &'a str, summary: Option<&'a Summary>) -> ChatChunk<'a> {
    ChatChunk {
        model,
        created_at: rfc3339_now(),
        message: Message {
            role: "assistant",
            content,
        },
        done_reason: summary.map(|s| s.done_reason),
        done: summary.is_some(),
        metrics: summary,
    }
}

fn generate_chunk<'a>(
    model: &'a str,
    response: &'a str,
    summary: Option<&'a Summary>,
) -> GenerateChunk<'a> {
    GenerateChunk {
        model,
        created_at: rfc3339_now(),
        response,
        done_reason: summary.map(|s| s.done_reason),
        done: summary.is_some(),
        context: summary.map(|_| [128_006, 882, 128_007]),
        metrics: summary,
    }
}

pub(crate) async fn root() -> &'static str {
    "Ollama is running"
}

pub(crate) async fn version(State(shared): AppState) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "version": shared.settings.version }),
    )
}

pub(crate) async fn tags(State(shared): AppState) -> Response {
    let models: Vec<Value> = shared.models().iter().map(|m| tags_entry(m)).collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

/// What is loaded: the simulated GPU's real state, or else the list the test set.
pub(crate) async fn ps(State(shared): AppState) -> Response {
    let models: Vec<Value> = match shared.gpu.as_ref() {
        Some(gpu) => gpu.ps(),
        None => shared.loaded().iter().map(|m| ps_entry(m)).collect(),
    };
    json_response(StatusCode::OK, &json!({ "models": models }))
}

/// Model-management paths (`/api/pull`, `/api/delete`...): the gateway should never
/// let them through, so the fake just says yes and tests look for them in the log.
pub(crate) async fn manage() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "success" }))
}

pub(crate) async fn show(State(shared): AppState, body: Bytes) -> Response {
    let request = match parse_body(&body).and_then(|r| model_of(&r)) {
        Ok(model) => model,
        Err(e) => return e.native(),
    };
    if !shared.has_model(&request) {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("model '{request}' not found") }),
        );
    }
    json_response(StatusCode::OK, &show_body(&request))
}

/// Checks Ollama does before generating: the model exists, then the queue has room.
pub(crate) fn admit(shared: &Shared, model: &str) -> Result<(), ApiError> {
    if !shared.has_model(model) {
        return Err(ApiError::model_not_found(model));
    }
    if shared.is_busy() {
        return Err(ApiError::busy());
    }
    Ok(())
}

/// With nothing to generate (no messages / empty prompt) Ollama only loads the model
/// (or unloads it with `keep_alive: 0`) and answers one plain JSON object.
fn load_reply(request: &Value) -> &'static str {
    let unload = request.get("keep_alive").and_then(Value::as_i64) == Some(0)
        || request.get("keep_alive").and_then(Value::as_str) == Some("0");
    if unload {
        "unload"
    } else {
        "load"
    }
}

/// A load-only request's reply, after the simulated GPU (if any) loaded or unloaded
/// the model; loading waits like any request for the model.
async fn load_or_unload(
    shared: &Shared,
    model: &str,
    request: &Value,
) -> Result<&'static str, ApiError> {
    let reply = load_reply(request);
    let Some(gpu) = shared.gpu.as_ref() else {
        return Ok(reply);
    };
    if reply == "unload" {
        gpu.unload(model);
    } else {
        gpu.job(model, request, None)?.load().await;
    }
    Ok(reply)
}

pub(crate) async fn chat(State(shared): AppState, body: Bytes) -> Response {
    let (request, model) = match read_model_request(&body) {
        Ok(parsed) => parsed,
        Err(e) => return e.native(),
    };
    if let Err(e) = admit(&shared, &model) {
        return e.native();
    }
    let texts = message_texts(&request);
    if texts.is_empty() {
        let mut chunk = chat_chunk(&model, "", None);
        chunk.done_reason = match load_or_unload(&shared, &model, &request).await {
            Ok(reply) => Some(reply),
            Err(e) => return e.native(),
        };
        chunk.done = true;
        return json_response(StatusCode::OK, &chunk);
    }
    let cap = int_field(request.get("options"), &["num_predict"]);
    let plan = Plan::new(&shared.settings, prompt_tokens(&texts), cap);
    let job = match job_for(&shared, &model, &request, PromptKind::Messages) {
        Ok(job) => job,
        Err(e) => return e.native(),
    };
    let generation = Generation::start(&shared, plan, job);
    if stream_flag(&request, true) {
        return streaming_response(generation, "application/x-ndjson", move |step| match step {
            Step::Token(t) => ndjson_line(&chat_chunk(&model, &t, None)),
            Step::Done(s) => ndjson_line(&chat_chunk(&model, "", Some(&s))),
            Step::Error(message) => ndjson_line(&json!({ "error": message })),
        })
        .await;
    }
    match generation.finish().await {
        Ok((text, summary)) => {
            json_response(StatusCode::OK, &chat_chunk(&model, &text, Some(&summary)))
        }
        Err(Failure::Died) => dropped_connection(),
        Err(Failure::Error(message)) => ApiError::internal(message).native(),
    }
}

pub(crate) async fn generate(State(shared): AppState, body: Bytes) -> Response {
    let (request, model) = match read_model_request(&body) {
        Ok(parsed) => parsed,
        Err(e) => return e.native(),
    };
    if let Err(e) = admit(&shared, &model) {
        return e.native();
    }
    let prompt = request.get("prompt").and_then(Value::as_str).unwrap_or("");
    if prompt.is_empty() {
        let mut chunk = generate_chunk(&model, "", None);
        chunk.done_reason = match load_or_unload(&shared, &model, &request).await {
            Ok(reply) => Some(reply),
            Err(e) => return e.native(),
        };
        chunk.done = true;
        return json_response(StatusCode::OK, &chunk);
    }
    let system = request.get("system").and_then(Value::as_str).unwrap_or("");
    let texts = [system.to_string(), prompt.to_string()];
    let cap = int_field(request.get("options"), &["num_predict"]);
    let plan = Plan::new(&shared.settings, prompt_tokens(&texts), cap);
    let job = match job_for(&shared, &model, &request, PromptKind::Completion) {
        Ok(job) => job,
        Err(e) => return e.native(),
    };
    let generation = Generation::start(&shared, plan, job);
    if stream_flag(&request, true) {
        return streaming_response(generation, "application/x-ndjson", move |step| match step {
            Step::Token(t) => ndjson_line(&generate_chunk(&model, &t, None)),
            Step::Done(s) => ndjson_line(&generate_chunk(&model, "", Some(&s))),
            Step::Error(message) => ndjson_line(&json!({ "error": message })),
        })
        .await;
    }
    match generation.finish().await {
        Ok((text, summary)) => json_response(
            StatusCode::OK,
            &generate_chunk(&model, &text, Some(&summary)),
        ),
        Err(Failure::Died) => dropped_connection(),
        Err(Failure::Error(message)) => ApiError::internal(message).native(),
    }
}

/// Embeddings take the first-token delay as their compute time and count as in flight.
pub(crate) async fn embedding_work(shared: &Arc<Shared>) -> InFlight {
    let in_flight = shared.in_flight.enter();
    let delay = shared.settings.first_token_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    in_flight
}

pub(crate) async fn embed(State(shared): AppState, body: Bytes) -> Response {
    let (request, model) = match read_model_request(&body) {
        Ok(parsed) => parsed,
        Err(e) => return e.native(),
    };
    if let Err(e) = admit(&shared, &model) {
        return e.native();
    }
    let inputs = string_or_list(request.get("input"));
    let _in_flight = embedding_work(&shared).await;
    let count = prompt_tokens(&inputs);
    shared.add_prompt_tokens(count);
    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|t| embedding(t)).collect();
    json_response(
        StatusCode::OK,
        &json!({
            "model": model,
            "embeddings": embeddings,
            "total_duration": 14_143_917u64,
            "load_duration": 1_019_500u64,
            "prompt_eval_count": count,
        }),
    )
}

/// The legacy single-prompt endpoint, which reports no counts.
pub(crate) async fn embeddings(State(shared): AppState, body: Bytes) -> Response {
    let (request, model) = match read_model_request(&body) {
        Ok(parsed) => parsed,
        Err(e) => return e.native(),
    };
    if let Err(e) = admit(&shared, &model) {
        return e.native();
    }
    let prompt = request.get("prompt").and_then(Value::as_str).unwrap_or("");
    let _in_flight = embedding_work(&shared).await;
    json_response(StatusCode::OK, &json!({ "embedding": embedding(prompt) }))
}
