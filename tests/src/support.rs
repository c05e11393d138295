//! Small helpers the end-to-end tests share: request bodies, stream reading, metrics.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

/// A native `/api/chat` body.
pub fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "say hello to the pool"}]})
}

/// An OpenAI `/v1/chat/completions` body.
pub fn openai_chat(model: &str, stream: bool, include_usage: bool) -> Value {
    let mut body = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]});
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// A reply read to its end, with when its first and last bytes arrived.
pub struct Timed {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub first_byte: Option<Duration>,
    pub total: Duration,
    /// Set when the body ended with a transport error (cut connection).
    pub error: Option<String>,
}

impl Timed {
    pub fn lines(&self) -> Vec<Value> {
        self.body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}"))
            })
            .collect()
    }
}

/// POSTs `body` and reads the whole response, timing the first body byte.
pub async fn post_timed(client: &reqwest::Client, url: &str, body: &Value) -> Timed {
    let start = Instant::now();
    let resp = client
        .post(url)
        .json(body)
        .send()
        .await
        .expect("send request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut stream = resp.bytes_stream();
    let mut out = Vec::new();
    let mut first_byte = None;
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                if first_byte.is_none() && !b.is_empty() {
                    first_byte = Some(start.elapsed());
                }
                out.extend_from_slice(&b);
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Timed {
        status,
        headers,
        body: String::from_utf8_lossy(&out).into_owned(),
        first_byte,
        total: start.elapsed(),
        error,
    }
}

/// Fetches `/metrics` and parses it as Prometheus text (panics when it does not parse).
pub async fn metrics(base: &str) -> prometheus_parse::Scrape {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text")
}

/// The sum of a metric's samples whose labels include all of `labels`.
pub fn metric_sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A non-streaming `/api/chat` with a bearer token.
pub async fn chat_as(base: &str, token: &str, model: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/chat"))
        .bearer_auth(token)
        .json(&chat(model, false))
        .send()
        .await
        .expect("send")
}

/// The org's `X-Quota-Used`, read from a cheap authenticated request.
pub async fn quota_used(base: &str, token: &str) -> u64 {
    let r = reqwest::Client::new()
        .get(format!("{base}/api/tags"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /api/tags");
    r.headers()["x-quota-used"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number")
}

/// `/metrics` once `name{labels}` sums to `want`: per-request counters are updated when the
/// gateway finishes the request, just after the client has read the last byte. Gives up
/// after 5 s and returns the last scrape (the caller's assertions then say what differs).
pub async fn metrics_when(
    base: &str,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> prometheus_parse::Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics(base).await;
        if metric_sum(&m, name, labels) == want || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
