//! The raw client reads what a server really sent, however the exchange ended.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::super::{chat_request, raw_exchange, send_slowly, Behaviour, HostileUpstream};
use super::{exchange, TIMEOUT};

#[test]
fn chat_request_builds_a_framed_post() {
    let bytes = chat_request("/api/chat", "{}", &[("Authorization", "Bearer t")]);
    assert_eq!(
        bytes,
        b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
Content-Length: 2\r\nAuthorization: Bearer t\r\n\r\n{}"
    );
    let own_host = chat_request("/x", "", &[("host", "h")]);
    assert!(own_host.starts_with(b"POST /x HTTP/1.1\r\nContent-Type"));
}

#[tokio::test]
async fn a_body_delimited_by_close_is_complete_when_the_server_closes() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close".to_vec();
    let upstream = HostileUpstream::start(Behaviour::Raw(raw)).await;
    let reply = exchange(&upstream, &chat_request("/api/chat", "{}", &[])).await;
    assert!(reply.complete && !reply.closed);
    assert_eq!(reply.text(), "until close");
    assert_eq!(reply.header("CONTENT-TYPE"), Some("text/plain"));
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
        .to_vec();
    let upstream = HostileUpstream::start(Behaviour::Raw(raw)).await;
    let reply = exchange(&upstream, &chat_request("/api/chat", "{}", &[])).await;
    assert_eq!((reply.status, reply.text().as_str()), (201, "ok"));
}

#[tokio::test]
async fn send_slowly_trickles_a_whole_request() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 1 }).await;
    let request = b"GET /api/version HTTP/1.1\r\nHost: a\r\n\r\n";
    let slow = send_slowly(&upstream.addr(), request, Duration::from_millis(2), TIMEOUT).await;
    assert_eq!(slow.sent, request.len());
    assert_eq!(slow.response.json()["version"], "0.12.0");
    assert!(slow.elapsed >= Duration::from_millis(2 * request.len() as u64));
}

#[tokio::test]
async fn send_slowly_stops_when_the_server_gives_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let impatient = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut first = [0u8; 4];
        socket.read_exact(&mut first).await.expect("4 bytes");
        let answer =
            b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        socket.write_all(answer).await.expect("write");
    });
    let request = b"GET /api/version HTTP/1.1\r\nHost: a\r\n\r\n";
    let slow = send_slowly(&addr, request, Duration::from_millis(20), TIMEOUT).await;
    impatient.await.expect("server task");
    assert_eq!(slow.response.status, 408);
    assert!(slow.sent < request.len(), "sent {} bytes", slow.sent);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let request = chat_request("/api/chat", "{}", &[]);
    let reply = raw_exchange(&addr, &request, Duration::from_millis(100)).await;
    assert!(reply.timed_out() && reply.status == 0);
    drop(listener);
}
