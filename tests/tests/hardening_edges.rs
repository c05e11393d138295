//! Protocol edges (issue 10, case 7): malformed chunk sizes, repeated `Content-Length`, header
//! blocks that are too large or too slow, and a client's own `Forwarded` header.

use std::time::{Duration, Instant};

use corral_tests::gateway::GatewayProcess;
use corral_tests::hostile::{
    chat_request, raw_exchange, send_slowly, Behaviour, HostileUpstream, RawConnection,
};
use corral_tests::support::{metric_sum, metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str =
    r#"{"model":"llama3:8b","messages":[{"role":"user","content":"hi"}],"stream":false}"#;

async fn setup(server_keys: &str) -> (HostileUpstream, GatewayProcess, String) {
    let a = HostileUpstream::start(Behaviour::Normal { tokens: 2 }).await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .server(server_keys)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let addr = gw.url().trim_start_matches("http://").to_string();
    (a, gw, addr)
}

#[tokio::test]
async fn an_overflowing_chunk_size_is_a_client_error() {
    let (a, gw, addr) = setup("").await;
    let request = "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                   Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n{\"model\":\r\n0\r\n\r\n";
    let r = raw_exchange(&addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["code"], "bad_request");
    assert_eq!(a.model_requests(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = gw.log();
    assert!(!log.contains(" ERROR "), "not a gateway error:\n{log}");
    let m = metrics(&gw.url()).await;
    assert!(metric_sum(&m, "corral_client_errors_total", &[("kind", "malformed")]) >= 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn repeated_content_length_is_collapsed_or_refused() {
    let (a, gw, addr) = setup("").await;
    let len = CHAT.len().to_string();
    let same = chat_request("/api/chat", CHAT, &[("Content-Length", &len)]);
    let r = raw_exchange(&addr, &same, Duration::from_secs(5)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = a
        .last_model_request()
        .expect("the upstream got the request");
    assert_eq!(
        seen.header_all("content-length").len(),
        1,
        "{:?}",
        seen.headers
    );

    let other = (CHAT.len() + 1).to_string();
    let conflicting = chat_request("/api/chat", CHAT, &[("Content-Length", &other)]);
    let r = raw_exchange(&addr, &conflicting, Duration::from_secs(5)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        a.model_requests(),
        1,
        "the conflicting one never went upstream"
    );
    gw.stop().await;
}

fn with_big_header(bytes: usize) -> Vec<u8> {
    let filler = "a".repeat(bytes);
    chat_request("/api/chat", CHAT, &[("X-Filler", &filler)])
}

#[tokio::test]
async fn large_header_blocks_get_431_with_the_json_error() {
    let (a, gw, addr) = setup("max_header_bytes = 65536").await;
    // The first request of a connection (the header guard), at 100 KiB and past Pingora's
    // own 1 MiB.
    for size in [100 * 1024, 2 * 1024 * 1024] {
        let r = raw_exchange(&addr, &with_big_header(size), Duration::from_secs(5)).await;
        assert_eq!(r.status, 431, "{size}: {}", r.text());
        assert_eq!(r.json()["code"], "request_header_too_large");
    }
    // A later request on a kept-alive connection (checked in request_filter).
    let mut conn = RawConnection::connect(&addr).await;
    let r = conn
        .exchange(
            &chat_request("/api/chat", CHAT, &[]),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = conn
        .exchange(&with_big_header(100 * 1024), Duration::from_secs(5))
        .await;
    assert_eq!(r.status, 431, "{}", r.text());
    assert_eq!(r.json()["code"], "request_header_too_large");
    // Under the limit is fine.
    let r = raw_exchange(&addr, &with_big_header(30 * 1024), Duration::from_secs(5)).await;
    assert_eq!(r.status, 200);
    assert_eq!(a.model_requests(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_at_the_header_timeout() {
    let (_a, gw, addr) = setup("header_timeout_ms = 1000").await;
    let started = Instant::now();
    let slow = send_slowly(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        Duration::from_millis(100),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(slow.response.status, 408, "{}", slow.response.text());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // 200 connections that send half a request line and wait: all are closed by the deadline.
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for mut s in conns {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection was closed by the gateway");
    }
    // A prompt client is not affected.
    let r = reqwest::get(format!("{}/healthz", gw.url()))
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let m = metrics(&gw.url()).await;
    assert!(metric_sum(&m, "corral_client_errors_total", &[("kind", "timeout")]) >= 200.0);
    gw.stop().await;
}

#[tokio::test]
async fn a_clients_forwarded_header_is_replaced() {
    let (a, gw, _addr) = setup("").await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .header("Forwarded", "for=6.6.6.6;proto=https;by=evil")
        .header("content-type", "application/json")
        .body(CHAT)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let seen = a.last_model_request().expect("request");
    assert_eq!(
        seen.header_all("forwarded"),
        vec!["for=127.0.0.1;proto=http"]
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_413_reaches_a_client_still_sending_its_body() {
    let (a, gw, _addr) = setup("").await;
    // 40 MiB announced and sent: the gateway answers 413 from the length, then reads what
    // arrives for a moment so the client sees the answer instead of a reset.
    let body = vec![b' '; 40 * 1024 * 1024];
    let client = reqwest::Client::new();
    let mut outcomes = Vec::new();
    for _ in 0..30 {
        let r = client
            .post(format!("{}/api/chat", gw.url()))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        outcomes.push(match r {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => format!("error: {e}"),
        });
    }
    assert!(
        outcomes.iter().all(|o| o == "413"),
        "every client saw its 413: {outcomes:?}"
    );
    assert_eq!(a.model_requests(), 0);
    gw.stop().await;
}
