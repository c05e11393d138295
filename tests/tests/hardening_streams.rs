//! Hostile upstreams and hostile values (issue 10, cases 3, 4 and 5): streams cut inside a
//! line, absurd and duplicated token counts, and client values that try to forge log lines.

use std::time::Duration;

use corral_tests::gateway::GatewayProcess;
use corral_tests::hostile::{Behaviour, HostileUpstream};
use corral_tests::jwt;
use corral_tests::support::{chat, metric_sum, metrics, metrics_when, openai_chat, quota_used};
use serde_json::{json, Value};

const SECRET: &str = "hardening-streams-secret";

async fn gateway_for(upstream: &HostileUpstream) -> GatewayProcess {
    let gw = GatewayProcess::builder()
        .instances(&[upstream.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    gw
}

async fn post_text(url: &str, body: &Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_stream_cut_inside_a_line_ends_with_whole_lines_only() {
    let a = HostileUpstream::start(Behaviour::CutMidLine { lines: 3 }).await;
    let gw = gateway_for(&a).await;
    let big = json!({"model": "llama3:8b", "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    // The main path and the relay (bodies over 64 KiB) alike.
    for body in [chat("llama3:8b", true), big] {
        let (status, text) = post_text(&format!("{}/api/chat", gw.url()), &body).await;
        assert_eq!(status, 200);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "3 whole lines, then the error: {text}");
        for line in &lines {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        }
        let last: Value = serde_json::from_str(lines[3]).expect("json");
        assert_eq!(last["code"], "upstream_unavailable", "{last}");
        assert!(text.ends_with('\n'));
    }
    let (status, text) = post_text(
        &format!("{}/v1/chat/completions", gw.url()),
        &openai_chat("llama3:8b", true, false),
    )
    .await;
    assert_eq!(status, 200);
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(events.len(), 4, "3 whole events, then the error: {text:?}");
    for event in &events {
        let data = event.strip_prefix("data: ").expect("a data event");
        serde_json::from_str::<Value>(data).unwrap_or_else(|e| panic!("{data:?}: {e}"));
    }
    assert!(events[3].contains("upstream_unavailable"));
    gw.stop().await;
}

#[tokio::test]
async fn absurd_counts_are_clamped_and_counters_never_go_down() {
    let a = HostileUpstream::start(Behaviour::Counts {
        prompt: u64::MAX,
        completion: u64::MAX,
        lines: 2,
    })
    .await;
    let gw = gateway_for(&a).await;
    let url = format!("{}/api/chat", gw.url());
    let mut last = (0.0, 0.0);
    for stream in [true, false, true] {
        let (status, _) = post_text(&url, &chat("llama3:8b", stream)).await;
        assert_eq!(status, 200);
        // Counters are updated just after the last byte: wait for this request's share.
        let mut now = last;
        for _ in 0..250 {
            let m = metrics(&gw.url()).await;
            now = (
                metric_sum(&m, "corral_tokens_total", &[("kind", "prompt")]),
                metric_sum(&m, "corral_tokens_total", &[("kind", "completion")]),
            );
            if now != last {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            now.0 > last.0 && now.1 > last.1,
            "counters only grow: {last:?} -> {now:?}"
        );
        last = now;
    }
    // Clamped to what the request could produce: its body's bytes plus the template allowance,
    // and the largest reply any model could give.
    assert!(last.1 <= 3.0 * 2_097_152.0, "{last:?}");
    assert!(last.0 <= 3.0 * (131_072.0 + 200.0), "{last:?}");
    let log = gw.log();
    assert!(log.contains("counts clamped"), "{log}");
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("path=/api/chat"))
        .collect();
    assert_eq!(access.len(), 3, "{log}");
    assert!(
        access.iter().all(|l| !l.contains("18446744073709551615")),
        "the access log shows the charged counts: {access:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_second_done_line_is_not_charged() {
    let a = HostileUpstream::start(Behaviour::DuplicateDone {
        first: (5, 7),
        second: (1000, 1000),
    })
    .await;
    let gw = gateway_for(&a).await;
    let (status, _) = post_text(&format!("{}/api/chat", gw.url()), &chat("llama3:8b", true)).await;
    assert_eq!(status, 200);
    let m = metrics_when(
        &gw.url(),
        "corral_tokens_total",
        &[("kind", "completion")],
        7.0,
    )
    .await;
    assert_eq!(
        metric_sum(&m, "corral_tokens_total", &[("kind", "prompt")]),
        5.0
    );
    assert_eq!(
        metric_sum(&m, "corral_tokens_total", &[("kind", "completion")]),
        7.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_interrupted_stream_is_counted_the_same_by_log_metrics_and_quota() {
    let a = HostileUpstream::start(Behaviour::CutMidLine { lines: 3 }).await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .policy(
            "q.toml",
            "[orgs.acme]\nquota = { soft_tokens = 500000, hard_tokens = 1000000 }\n",
        )
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let token = jwt::hs256(SECRET, &jwt::claims("acme", "u1", 600));
    let before = quota_used(&gw.url(), &token).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .bearer_auth(&token)
        .json(&chat("llama3:8b", true))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    // Three content chunks were sent before the cut: three completion tokens everywhere.
    let m = metrics_when(
        &gw.url(),
        "corral_org_tokens_total",
        &[("org", "acme")],
        3.0,
    )
    .await;
    assert_eq!(
        metric_sum(&m, "corral_org_tokens_total", &[("org", "acme")]),
        3.0
    );
    assert_eq!(
        metric_sum(&m, "corral_tokens_total", &[("kind", "completion")]),
        3.0
    );
    assert_eq!(quota_used(&gw.url(), &token).await, before + 3);
    let log = gw.log();
    let access = log
        .lines()
        .find(|l| l.contains("path=/api/chat") && l.contains("interrupted=true"))
        .unwrap_or_else(|| panic!("no access line for the cut stream:\n{log}"));
    assert!(access.contains("completion_tokens=3"), "{access}");
    gw.stop().await;
}

#[tokio::test]
async fn client_values_cannot_forge_log_lines_or_grow_them() {
    let a = HostileUpstream::start(Behaviour::Normal { tokens: 2 }).await;
    let gw = gateway_for(&a).await;
    let url = format!("{}/api/chat", gw.url());
    let forged =
        "x\n2026-12-01T00:00:00.000000Z  INFO access: request_id=forged status=200 \u{1b}[31mred";
    let (status, body) = post_text(&url, &chat(forged, false)).await;
    assert_eq!(status, 404, "{body}");

    let huge = "m".repeat(10 * 1024 * 1024);
    let (status, body) = post_text(&url, &chat(&huge, false)).await;
    assert_eq!(status, 400);
    assert!(
        body.len() < 2048,
        "the error does not echo the name: {} bytes",
        body.len()
    );
    assert!(body.contains("longer than the limit of 256"), "{body}");

    let r = reqwest::Client::new()
        .get(format!("{}/api/tags", gw.url()))
        .header(
            "user-agent",
            format!("agent \"quoted\" {}", "u".repeat(5000)),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.log();
    assert!(!log.contains('\u{1b}'), "no terminal escapes reach the log");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-01T00:00:00")),
        "no forged line:\n{log}"
    );
    let forged_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request_id=forged"))
        .collect();
    assert_eq!(forged_lines.len(), 1, "{log}");
    assert!(forged_lines[0].contains("path=/api/chat") && forged_lines[0].contains("status=404"));
    assert!(
        forged_lines[0].contains("\\n2026-12-01"),
        "{}",
        forged_lines[0]
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    assert!(
        log.contains("agent \\\"quoted\\\""),
        "user agent escaped:\n{log}"
    );
    gw.stop().await;
}
