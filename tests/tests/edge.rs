//! The edge: TLS with SNI and reload, HTTP/2 by ALPN, HTTP→HTTPS redirect, HSTS, CORS,
//! forwarding headers and WebSocket pass-through, through the real binary.

use std::net::SocketAddr;
use std::time::Duration;

use corral_tests::certs::{der_of, TestCa};
use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::{free_port, GatewayProcess};
use corral_tests::support::{chat, eventually};
use futures::{SinkExt, StreamExt};
use nix::sys::signal::Signal;

fn tls_client(ca: &TestCa, tls_port: u16, names: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca.ca_pem()).expect("ca"))
        .tls_info(true)
        .pool_max_idle_per_host(0);
    for name in names {
        b = b.resolve(name, SocketAddr::from(([127, 0, 0, 1], tls_port)));
    }
    b.build().expect("client")
}

/// The certificate a fresh connection is given (a fresh client, so no TLS session resumption
/// hides a new certificate).
async fn presented_cert(ca: &TestCa, tls_port: u16, name: &str, path: &str) -> Vec<u8> {
    let client = tls_client(ca, tls_port, &[name]);
    let r = client
        .get(format!("https://{name}:{tls_port}{path}"))
        .send()
        .await
        .expect("TLS request");
    let info = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    info.peer_certificate().expect("peer cert").to_vec()
}

fn tls_toml(port: u16, default: &corral_tests::certs::Leaf, extra: &str) -> String {
    format!(
        "[tls]\nlisten = \"127.0.0.1:{port}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nwatch_interval_ms = 100\n{extra}\n",
        default.cert.display(),
        default.key.display()
    )
}

#[tokio::test]
async fn tls_with_h2_by_alpn_and_sni_certificates() {
    let ca = TestCa::new();
    let chat_cert = ca.issue("chat", &["chat.example.com"]);
    let admin_cert = ca.issue("admin", &["admin.example.com", "*.admin.example.com"]);
    let a = FakeOllama::builder()
        .tokens(5)
        .token_delay(Duration::from_millis(10))
        .start()
        .await;
    let tls_port = free_port();
    let extra = format!(
        "[[tls.certificates]]\nserver_names = [\"admin.example.com\", \"*.admin.example.com\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        admin_cert.cert.display(),
        admin_cert.key.display()
    );
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .toml(&tls_toml(tls_port, &chat_cert, &extra))
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let names = [
        "chat.example.com",
        "admin.example.com",
        "eu.admin.example.com",
    ];
    let client = tls_client(&ca, tls_port, &names);

    // h2 negotiated by ALPN, and a stream over it.
    let resp = client
        .post(format!("https://chat.example.com:{tls_port}/api/chat"))
        .json(&chat("llama3:8b", true))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert_eq!(resp.text().await.expect("body").lines().count(), 6);

    // HTTP/1.1 over TLS works too.
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca.ca_pem()).expect("ca"))
        .resolve(
            "chat.example.com",
            SocketAddr::from(([127, 0, 0, 1], tls_port)),
        )
        .build()
        .expect("client");
    let r = h1
        .get(format!("https://chat.example.com:{tls_port}/api/tags"))
        .send()
        .await
        .expect("h1");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);

    // SNI picks the certificate.
    let got = presented_cert(&ca, tls_port, "admin.example.com", "/healthz").await;
    assert_eq!(got, der_of(&admin_cert.cert));
    let got = presented_cert(&ca, tls_port, "eu.admin.example.com", "/healthz").await;
    assert_eq!(got, der_of(&admin_cert.cert), "wildcard name");
    let got = presented_cert(&ca, tls_port, "chat.example.com", "/healthz").await;
    assert_eq!(got, der_of(&chat_cert.cert));
    gw.stop().await;
}

#[tokio::test]
async fn certificates_reload_on_change_and_on_sighup_without_dropping_streams() {
    let ca = TestCa::new();
    let first = ca.issue("first", &["chat.example.com"]);
    let a = FakeOllama::builder()
        .tokens(20)
        .token_delay(Duration::from_millis(50))
        .start()
        .await;
    let tls_port = free_port();
    let live_dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (
        live_dir.path().join("cert.pem"),
        live_dir.path().join("key.pem"),
    );
    std::fs::copy(&first.cert, &cert).expect("copy");
    std::fs::copy(&first.key, &key).expect("copy");
    let live = corral_tests::certs::Leaf {
        cert: cert.clone(),
        key: key.clone(),
    };
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .toml(&tls_toml(tls_port, &live, ""))
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = tls_client(&ca, tls_port, &["chat.example.com"]);
    let url = format!("https://chat.example.com:{tls_port}");
    assert_eq!(
        presented_cert(&ca, tls_port, "chat.example.com", "/healthz").await,
        der_of(&first.cert)
    );

    // A stream in flight while the certificate changes keeps going.
    let stream = tokio::spawn({
        let client = client.clone();
        let url = format!("{url}/api/chat");
        async move { corral_tests::support::post_timed(&client, &url, &chat("llama3:8b", true)).await }
    });
    let second = ca.issue("second", &["chat.example.com"]);
    std::fs::copy(&second.key, &key).expect("copy");
    std::fs::copy(&second.cert, &cert).expect("copy");
    eventually(Duration::from_secs(5), "new certificate served", || async {
        presented_cert(&ca, tls_port, "chat.example.com", "/healthz").await == der_of(&second.cert)
    })
    .await;
    let r = stream.await.expect("join");
    assert_eq!(r.status, 200);
    assert!(r.error.is_none());
    assert_eq!(r.lines().len(), 21);

    // A broken edit keeps the old certificate.
    std::fs::write(&cert, "not a certificate").expect("write");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        presented_cert(&ca, tls_port, "chat.example.com", "/healthz").await,
        der_of(&second.cert)
    );

    // SIGHUP reloads too.
    let third = ca.issue("third", &["chat.example.com"]);
    std::fs::copy(&third.key, &key).expect("copy");
    std::fs::copy(&third.cert, &cert).expect("copy");
    gw.signal(Signal::SIGHUP);
    eventually(
        Duration::from_secs(5),
        "third certificate served",
        || async {
            presented_cert(&ca, tls_port, "chat.example.com", "/healthz").await
                == der_of(&third.cert)
        },
    )
    .await;
    let r = reqwest::get(format!("{}/healthz", gw.url()))
        .await
        .expect("still alive after SIGHUP");
    assert_eq!(r.status(), 200);
    let m = corral_tests::support::metrics(&gw.url()).await;
    assert!(
        corral_tests::support::metric_sum(&m, "corral_tls_reloads_total", &[("result", "error")])
            >= 1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn plain_http_redirects_to_https_except_healthz() {
    let ca = TestCa::new();
    let leaf = ca.issue("chat", &["chat.example.com"]);
    let tls_port = free_port();
    let gw = GatewayProcess::builder()
        .toml(&tls_toml(tls_port, &leaf, "redirect_http = true"))
        .start()
        .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client
        .get(format!("{}/api/tags?x=1", gw.url()))
        .header("Host", "chat.example.com:8080")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://chat.example.com:{tls_port}/api/tags?x=1")
    );
    let r = client
        .get(format!("{}/healthz", gw.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "load balancers probe the plain port");
    assert!(
        r.headers().get("strict-transport-security").is_none(),
        "no HSTS over plain HTTP"
    );
    gw.stop().await;
}

#[tokio::test]
async fn cors_preflight_and_actual_responses() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .toml("[cors]\norigins = [\"https://chat.example.com\", \"https://*.apps.example.com\"]\nallow_credentials = true\nmax_age_s = 300\n")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());

    let pre = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://chat.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, authorization, x-stainless-os",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(pre.status(), 204);
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "https://chat.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "300");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .expect("str")
        .contains("POST"));
    assert!(h["access-control-allow-headers"]
        .to_str()
        .expect("str")
        .contains("authorization"));
    assert!(h["vary"].to_str().expect("str").contains("Origin"));

    for (origin, method) in [
        ("https://evil.example.net", "POST"),
        ("https://chat.example.com", "TRACE"),
    ] {
        let refused = client
            .request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .send()
            .await
            .expect("preflight");
        assert_eq!(refused.status(), 403, "{origin} {method}");
        assert!(refused
            .headers()
            .get("access-control-allow-origin")
            .is_none());
    }

    let ok = client
        .post(&url)
        .header("Origin", "https://eu.apps.example.com")
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://eu.apps.example.com"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    assert!(ok.headers()["access-control-expose-headers"]
        .to_str()
        .expect("str")
        .contains("X-Quota-Used"));
    assert!(
        a.last_request().expect("req").header("origin").is_none(),
        "Origin is not sent to Ollama"
    );

    let foreign = client
        .post(&url)
        .header("Origin", "https://evil.example.net")
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("post");
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "a foreign origin is never echoed"
    );
    assert!(foreign.headers()["vary"]
        .to_str()
        .expect("str")
        .contains("Origin"));
    assert_eq!(a.requests(), 2, "preflights never reach an instance");
    gw.stop().await;
}

#[tokio::test]
async fn forwarding_headers_trust_only_trusted_proxies() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    client
        .post(format!("{}/api/chat", gw.url()))
        .header("X-Forwarded-For", "6.6.6.6")
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("post");
    let seen = a.last_request().expect("request");
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "an untrusted chain is replaced"
    );
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    gw.stop().await;

    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .server("trusted_proxies = [\"127.0.0.0/8\"]")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    client
        .post(format!("{}/api/chat", gw.url()))
        .header("X-Forwarded-For", "203.0.113.9")
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("post");
    let seen = a.last_request().expect("request");
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.9"));
    gw.stop().await;
}

/// A WebSocket echo server standing in for a backend that speaks WebSocket.
async fn ws_echo() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// One WebSocket through the gateway: upgrade (101), send a text, read the echo.
async fn ws_round_trip(port: u16) -> Result<String, String> {
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/echo"))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello pool"))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let back = ws
        .next()
        .await
        .ok_or("no reply")?
        .map_err(|e| format!("reply: {e}"))?;
    back.into_text()
        .map(|t| t.as_str().to_string())
        .map_err(|e| format!("not text: {e}"))
}

#[tokio::test]
async fn websocket_upgrades_pass_on_routes_configured_for_them() {
    let echo = ws_echo().await;
    let gw = GatewayProcess::builder()
        .env("BACKEND_URL", &echo)
        .toml("[[routes]]\nprefix = \"/ws/\"\ntarget = \"backend\"\nwebsocket = true\n\n[[routes]]\nprefix = \"/api/\"\ntarget = \"backend\"\n")
        .start()
        .await;
    // Pingora 0.9 can tear a tunnel down right after the 101 when the upstream answers fast
    // (cloudflare/pingora#946, README Status); a client then reconnects, and so does this
    // test, a few times at most.
    let mut failures = Vec::new();
    let back = loop {
        match ws_round_trip(gw.port).await {
            Ok(text) => break text,
            Err(e) if failures.len() < 4 => failures.push(e),
            Err(e) => panic!(
                "echo through the gateway failed 5 times: {failures:?}, {e}\n{}",
                gw.log()
            ),
        }
    };
    if !failures.is_empty() {
        println!(
            "echo succeeded after {} torn tunnels: {failures:?}",
            failures.len()
        );
    }
    assert_eq!(back, "hello pool");
    let refused =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/api/conversations", gw.port))
            .await;
    assert!(
        refused.is_err(),
        "no upgrade on a route without websocket = true"
    );
    gw.stop().await;
}

/// `notAfter` of a PEM certificate, in Unix seconds, as openssl reads it.
fn openssl_not_after(cert: &std::path::Path) -> i64 {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let date = text.trim().trim_start_matches("notAfter=");
    chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%SZ")
        .unwrap_or_else(|e| panic!("{date:?}: {e}"))
        .and_utc()
        .timestamp()
}

#[tokio::test]
async fn certificate_expiry_is_exported_for_alerts() {
    let ca = TestCa::new();
    let leaf = ca.issue("expiry", &["chat.example.com"]);
    let a = FakeOllama::builder().start().await;
    let tls_port = free_port();
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .toml(&tls_toml(tls_port, &leaf, ""))
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let m = corral_tests::support::metrics(&gw.url()).await;
    let exported = corral_tests::support::metric_sum(
        &m,
        "corral_tls_cert_expiry_timestamp_seconds",
        &[("cert_file", leaf.cert.to_str().expect("utf-8 path"))],
    );
    assert_eq!(exported as i64, openssl_not_after(&leaf.cert));
    gw.stop().await;
}
