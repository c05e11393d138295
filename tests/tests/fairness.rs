//! Fair sharing of a saturated pool: one org floods, another trickles; the trickle's waits
//! stay bounded because freed slots go to the fairest waiter, not the longest queue.

use std::time::Duration;

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::jwt::{self, claims};
use corral_tests::support::{chat, post_timed};

const SECRET: &str = "fairness-secret-fairness-secret-fairness";
const POLICY: &str = "[defaults]\nrequests_per_minute = 0\nuser_requests_per_minute = 0\nmax_concurrent_streams = 0\n";

#[tokio::test]
async fn a_trickling_org_is_not_starved_by_a_flooding_one() {
    // One instance, two slots, each stream ~200 ms: 40 flood streams need ~4 s of slot time.
    let a = FakeOllama::builder()
        .tokens(5)
        .token_delay(Duration::from_millis(40))
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .pool("max_inflight_per_instance = 2\nqueue_size = 500\nqueue_timeout_ms = 30000")
        .policy("p.toml", POLICY)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let url = format!("{}/api/chat", gw.url());
    let flood_tok = jwt::hs256(SECRET, &claims("flood", "f", 600));
    let quiet_tok = jwt::hs256(SECRET, &claims("quiet", "q", 600));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(100)
        .build()
        .expect("client");

    let flood = {
        let (client, url, tok) = (client.clone(), url.clone(), flood_tok.clone());
        tokio::spawn(async move {
            let body = chat("llama3:8b", true);
            let calls = (0..40).map(|_| {
                let req = client.post(&url).bearer_auth(&tok).json(&body);
                async move { req.send().await.expect("send").text().await.expect("body") }
            });
            futures::future::join_all(calls).await.len()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the queue is full of flood by now

    let quiet_client = reqwest::Client::builder().default_headers({
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "authorization",
            format!("Bearer {quiet_tok}").parse().expect("header"),
        );
        h
    });
    let quiet_client = quiet_client.build().expect("client");
    let mut waits = Vec::new();
    for _ in 0..5 {
        let r = post_timed(&quiet_client, &url, &chat("llama3:8b", true)).await;
        assert_eq!(r.status, 200);
        waits.push(r.first_byte.expect("first byte"));
    }
    let flood_done = flood.await.expect("flood");
    assert_eq!(flood_done, 40);
    let worst = waits.iter().max().copied().unwrap_or_default();
    println!("quiet org first-byte waits under flood: {waits:?} (worst {worst:?}); flooding org's own waits follow");
    assert!(
        worst < Duration::from_millis(800),
        "quiet org waited {worst:?} behind the flood: {waits:?}"
    );
    assert!(a.max_in_flight() <= 2);

    // Control, same run: a request from the flooding org itself waits its turn behind the flood.
    let flood = {
        let (client, url, tok) = (client.clone(), url.clone(), flood_tok.clone());
        tokio::spawn(async move {
            let body = chat("llama3:8b", true);
            let calls = (0..40).map(|_| {
                let req = client.post(&url).bearer_auth(&tok).json(&body);
                async move { req.send().await.expect("send").text().await.expect("body") }
            });
            futures::future::join_all(calls).await.len()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let timed = post_timed(
        &reqwest::Client::builder()
            .default_headers({
                let mut h = reqwest::header::HeaderMap::new();
                h.insert(
                    "authorization",
                    format!("Bearer {flood_tok}").parse().expect("header"),
                );
                h
            })
            .build()
            .expect("client"),
        &url,
        &chat("llama3:8b", true),
    )
    .await;
    flood.await.expect("flood");
    let control = timed.first_byte.expect("first byte");
    println!("control: a flooding-org request waited {control:?}");
    assert!(control > worst, "the flooding org's own request waits longer ({control:?}) than the quiet org's worst ({worst:?})");
    gw.stop().await;
}
