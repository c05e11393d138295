//! One streamed `/api/chat` turn as a chat client sees it: status, time to the first
//! content chunk, the reply text, and Ollama's counters from the final chunk.

use std::time::{Duration, Instant};

use serde_json::Value;

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A whole reply, ending with `done: true`.
    Done,
    /// Refused before streaming, with this status.
    Status(u16),
    /// An `{"error": ...}` line after streaming began.
    StreamError,
    /// The stream ended (or broke) without its final chunk.
    Cut,
    /// No response: connecting or sending failed, or the turn timed out.
    Transport,
}

impl Outcome {
    /// The key errors are counted under in reports.
    pub fn label(&self) -> String {
        match self {
            Outcome::Done => "ok".to_string(),
            Outcome::Status(status) => status.to_string(),
            Outcome::StreamError => "stream_error".to_string(),
            Outcome::Cut => "cut".to_string(),
            Outcome::Transport => "transport".to_string(),
        }
    }
}

/// What one turn produced.
#[derive(Debug, Clone)]
pub struct TurnResult {
    pub outcome: Outcome,
    /// From sending the request to the first chunk with content.
    pub ttft: Option<Duration>,
    /// From sending the request to the end of the stream.
    pub total: Duration,
    pub reply: String,
    /// `eval_count` of the final chunk.
    pub completion_tokens: u64,
    /// `prompt_eval_count` of the final chunk: the tokens the instance evaluated.
    pub evaluated_tokens: u64,
}

/// Sends `body` to `url` and reads the NDJSON stream to its end (or `timeout`).
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: &Value,
    timeout: Duration,
) -> TurnResult {
    let sent = Instant::now();
    let mut result = TurnResult {
        outcome: Outcome::Transport,
        ttft: None,
        total: Duration::ZERO,
        reply: String::new(),
        completion_tokens: 0,
        evaluated_tokens: 0,
    };
    let outcome =
        tokio::time::timeout(timeout, read(client, url, session, body, sent, &mut result))
            .await
            .unwrap_or(Outcome::Transport);
    result.outcome = outcome;
    result.total = sent.elapsed();
    result
}

async fn read(
    client: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: &Value,
    sent: Instant,
    result: &mut TurnResult,
) -> Outcome {
    let mut request = client.post(format!("{url}/api/chat")).json(body);
    if let Some(id) = session {
        request = request.header("X-Corral-Session", id);
    }
    let Ok(mut response) = request.send().await else {
        return Outcome::Transport;
    };
    if response.status() != reqwest::StatusCode::OK {
        return Outcome::Status(response.status().as_u16());
    }
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) | Err(_) => return Outcome::Cut,
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(outcome) = take_line(&line, sent, result) {
                return outcome;
            }
        }
    }
}

/// Applies one NDJSON line to the result; `Some` once the stream has ended.
fn take_line(line: &[u8], sent: Instant, result: &mut TurnResult) -> Option<Outcome> {
    let Ok(value) = serde_json::from_slice::<Value>(line) else {
        return None;
    };
    if value.get("error").is_some() {
        return Some(Outcome::StreamError);
    }
    if let Some(text) = value["message"]["content"].as_str() {
        if !text.is_empty() && result.ttft.is_none() {
            result.ttft = Some(sent.elapsed());
        }
        result.reply.push_str(text);
    }
    if value["done"].as_bool() == Some(true) {
        result.completion_tokens = value["eval_count"].as_u64().unwrap_or(0);
        result.evaluated_tokens = value["prompt_eval_count"].as_u64().unwrap_or(0);
        return Some(Outcome::Done);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> TurnResult {
        TurnResult {
            outcome: Outcome::Transport,
            ttft: None,
            total: Duration::ZERO,
            reply: String::new(),
            completion_tokens: 0,
            evaluated_tokens: 0,
        }
    }

    #[test]
    fn lines_build_the_reply_and_the_final_counts() {
        let sent = Instant::now();
        let mut r = empty();
        let lines = [
            r#"{"message":{"role":"assistant","content":""},"done":false}"#,
            r#"{"message":{"role":"assistant","content":"tok1 "},"done":false}"#,
            r#"{"message":{"role":"assistant","content":"tok2 "},"done":false}"#,
        ];
        for line in lines {
            assert_eq!(take_line(line.as_bytes(), sent, &mut r), None);
        }
        let done =
            r#"{"message":{"content":""},"done":true,"eval_count":2,"prompt_eval_count":17}"#;
        assert_eq!(
            take_line(done.as_bytes(), sent, &mut r),
            Some(Outcome::Done)
        );
        assert_eq!(r.reply, "tok1 tok2 ");
        assert!(r.ttft.is_some());
        assert_eq!((r.completion_tokens, r.evaluated_tokens), (2, 17));
    }

    #[test]
    fn an_error_line_ends_the_stream() {
        let mut r = empty();
        let line = br#"{"error":"model runner has unexpectedly stopped"}"#;
        assert_eq!(
            take_line(line, Instant::now(), &mut r),
            Some(Outcome::StreamError)
        );
        assert_eq!(Outcome::Status(503).label(), "503");
    }
}
