//! The upstream's HTTP: healthy probes, keep-alive, request parsing and recording.

use serde_json::json;

use super::super::{chat_request, Behaviour, HostileUpstream, RawConnection};
use super::{exchange, native_chat, TIMEOUT};

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn probes_answer_like_a_healthy_ollama_on_one_connection() {
    let upstream = HostileUpstream::start(Behaviour::NeverAnswer).await;
    let mut conn = RawConnection::connect(&upstream.url()).await;
    let tags = conn.exchange(&get("/api/tags"), TIMEOUT).await;
    assert_eq!(tags.status, 200);
    assert_eq!(
        tags.json(),
        json!({"models": [{"name": "llama3:8b", "model": "llama3:8b",
            "modified_at": "2024-01-01T00:00:00Z", "size": 1, "digest": "x", "details": {}}]})
    );
    assert_eq!(
        tags.header("content-length"),
        Some(tags.body.len().to_string().as_str())
    );
    let ps = conn.exchange(&get("/api/ps"), TIMEOUT).await;
    assert_eq!(ps.json(), json!({"models": []}));
    let version = conn.exchange(&get("/api/version"), TIMEOUT).await;
    assert_eq!(version.json(), json!({"version": "0.12.0"}));
    let root = conn.exchange(&get("/"), TIMEOUT).await;
    assert_eq!(root.text(), "Ollama is running");
    let head = conn
        .exchange(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n", TIMEOUT)
        .await;
    assert!(head.complete && head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("17"));
    let missing = conn.exchange(&get("/nope"), TIMEOUT).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        upstream.model_requests(),
        0,
        "probes are not model requests"
    );
    assert_eq!(
        upstream.requests_log().len(),
        6,
        "all on one kept-alive connection"
    );
}

#[tokio::test]
async fn the_model_list_is_configurable() {
    let upstream = HostileUpstream::builder()
        .models(&["a:1", "b:2"])
        .start()
        .await;
    let names = |r: &super::super::RawResponse| -> Vec<String> {
        let tags = r.json();
        let models = tags["models"].as_array().expect("models").clone();
        models
            .iter()
            .map(|m| m["name"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(
        names(&exchange(&upstream, &get("/api/tags")).await),
        ["a:1", "b:2"]
    );
    upstream.set_models(&["c:3"]);
    assert_eq!(
        names(&exchange(&upstream, &get("/api/tags")).await),
        ["c:3"]
    );
    let reply = exchange(&upstream, &chat_request("/api/chat", "{}", &[])).await;
    let lines = super::ndjson(&reply.body);
    assert_eq!(
        lines[0]["model"], "c:3",
        "a request without model gets the first listed"
    );
}

#[tokio::test]
async fn a_chunked_request_body_is_decoded_and_recorded_with_duplicate_headers() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 1 }).await;
    let request = b"POST /api/chat?x=1 HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nx-dup: 2\r\n\
Transfer-Encoding: chunked\r\n\r\n5;ext\r\n{\"str\r\nb\r\neam\":false}\r\n0\r\n\r\n";
    let reply = exchange(&upstream, request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["done"], true, "stream:false arrived whole");
    let seen = upstream.last_model_request().expect("recorded");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/api/chat?x=1");
    assert_eq!(seen.route(), "/api/chat");
    assert_eq!(seen.body, br#"{"stream":false}"#);
    assert_eq!(seen.header_all("x-dup"), ["1", "2"]);
    assert_eq!(seen.headers[1], ("X-Dup".to_string(), "1".to_string()));
    assert_eq!(upstream.model_requests(), 1);
}

#[tokio::test]
async fn pipelined_requests_get_their_responses_in_order() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 2 }).await;
    let mut conn = RawConnection::connect(&upstream.addr()).await;
    let mut both = native_chat("/api/chat", Some(false));
    both.extend(get("/api/version"));
    let chat = conn.exchange(&both, TIMEOUT).await;
    assert_eq!(chat.json()["eval_count"], 2);
    let version = conn.read_response(false, TIMEOUT).await;
    assert_eq!(version.json()["version"], "0.12.0");
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 1 }).await;
    let mut conn = RawConnection::connect(&upstream.addr()).await;
    let request = b"GET /api/ps HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let reply = conn.exchange(request, TIMEOUT).await;
    assert_eq!(reply.header("connection"), Some("close"));
    let after = conn.exchange(&get("/api/ps"), TIMEOUT).await;
    assert!(after.closed && after.status == 0);
}

#[tokio::test]
async fn an_unframeable_request_gets_400_and_a_close() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 1 }).await;
    let request = b"POST /api/chat HTTP/1.1\r\nContent-Length: nope\r\n\r\n";
    let reply = exchange(&upstream, request).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(upstream.model_requests(), 0);
}

#[tokio::test]
async fn behaviour_changes_at_runtime() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 1 }).await;
    let ok = exchange(&upstream, &native_chat("/api/chat", Some(false))).await;
    assert_eq!(ok.status, 200);
    upstream.set_behaviour(Behaviour::Status {
        code: 503,
        body: r#"{"error":"busy"}"#.into(),
    });
    let busy = exchange(&upstream, &native_chat("/api/chat", Some(false))).await;
    assert_eq!(busy.status, 503);
    assert_eq!(upstream.model_requests(), 2);
}

#[tokio::test]
async fn stop_drops_connections_and_refuses_new_ones() {
    let upstream = HostileUpstream::start(Behaviour::NeverAnswer).await;
    let mut held = RawConnection::connect(&upstream.addr()).await;
    held.send(&native_chat("/api/chat", None)).await;
    super::super::super::support::eventually(TIMEOUT, "request held", || async {
        upstream.in_flight() == 1
    })
    .await;
    upstream.stop().await;
    let reply = held.read_response(false, TIMEOUT).await;
    assert!(reply.closed, "held connection dropped");
    assert_eq!(upstream.in_flight(), 0);
    let refused = tokio::net::TcpStream::connect(upstream.addr()).await;
    assert!(refused.is_err());
}
