//! Hostile policy directories (issue 10, case 1): a link to `/dev/zero`, a FIFO, a file over
//! the size limit, and a huge valid policy replaced by a small one. None may take the gateway
//! down, hide later edits, or keep its memory.

use std::path::Path;
use std::time::Duration;

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::{binary, GatewayProcess};
use corral_tests::support::{eventually, metric_sum, metrics};
use serde_json::Value;

async fn readyz(base: &str) -> Value {
    reqwest::get(format!("{base}/readyz"))
        .await
        .expect("GET /readyz")
        .json()
        .await
        .expect("readyz JSON")
}

/// The gateway's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(ok.success());
}

#[tokio::test]
async fn devices_and_fifos_are_refused_and_later_edits_still_apply() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .policy("base.toml", "[defaults]\nrequests_per_minute = 1000\n")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let dir = gw.policies_dir();
    let rss_before = rss_kib(gw.pid());

    std::os::unix::fs::symlink("/dev/zero", dir.join("z.toml")).expect("symlink");
    let base = gw.url();
    eventually(
        Duration::from_secs(5),
        "the /dev/zero link is refused",
        || async {
            let r = readyz(&base).await;
            r["checks"]["policy"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("z.toml") && e.contains("character device"))
        },
    )
    .await;
    let r = readyz(&base).await;
    assert_eq!(r["status"], "degraded", "{r}");
    // Reading /dev/zero grew memory by ~300 MB/s; the refusal reads nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rss_kib(gw.pid()) < rss_before + 50 * 1024,
        "memory stays flat: {} KiB -> {} KiB",
        rss_before,
        rss_kib(gw.pid())
    );
    std::fs::remove_file(dir.join("z.toml")).expect("rm link");

    // A FIFO used to block the watcher forever: later edits were ignored.
    mkfifo(&dir.join("f.toml"));
    eventually(Duration::from_secs(5), "the FIFO is refused", || async {
        let r = readyz(&base).await;
        r["checks"]["policy"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("f.toml") && e.contains("FIFO"))
    })
    .await;
    std::fs::remove_file(dir.join("f.toml")).expect("rm fifo");
    // A later edit, broken then good, is still seen.
    std::fs::write(
        dir.join("base.toml"),
        "[defaults]\nrequests_per_minute = \"x\"\n",
    )
    .expect("write");
    eventually(
        Duration::from_secs(5),
        "the broken edit is reported",
        || async {
            let r = readyz(&base).await;
            r["checks"]["policy"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("base.toml:2"))
        },
    )
    .await;
    std::fs::write(
        dir.join("base.toml"),
        "[defaults]\nrequests_per_minute = 5\n",
    )
    .expect("write");
    eventually(Duration::from_secs(5), "the good edit applies", || async {
        let r = readyz(&base).await;
        r["status"] == "ok" && r["checks"]["policy"]["watcher"] == "ok"
    })
    .await;
    let m = metrics(&base).await;
    assert!(metric_sum(&m, "corral_policy_reloads_total", &[("result", "error")]) >= 3.0);
    gw.stop().await;
}

#[tokio::test]
async fn a_file_over_the_size_limit_is_refused_like_a_bad_edit() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .policies("max_file_bytes = 4096")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let mut text = String::from("[defaults]\nrequests_per_minute = 10\n");
    text.push_str(&"# padding\n".repeat(1000));
    std::fs::write(gw.policies_dir().join("big.toml"), text).expect("write");
    let base = gw.url();
    eventually(
        Duration::from_secs(5),
        "the large file is refused",
        || async {
            readyz(&base).await["checks"]["policy"]["last_error"]
                .as_str()
                .is_some_and(|e| {
                    e.contains("big.toml") && e.contains("policies.max_file_bytes (4096)")
                })
        },
    )
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn gateway_check_refuses_a_link_to_dev_zero_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("mkdir");
    std::os::unix::fs::symlink("/dev/zero", policies.join("z.toml")).expect("symlink");
    let conf = dir.path().join("gateway.toml");
    std::fs::write(
        &conf,
        format!("[policies]\ndir = \"{}\"\n", policies.display()),
    )
    .expect("write config");
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(binary("gateway"))
            .args(["check", "--config"])
            .arg(&conf)
            .output(),
    )
    .await
    .expect("gateway check returns at once")
    .expect("run gateway check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("z.toml") && err.contains("character device"),
        "{err}"
    );
}

/// A policy of `orgs` orgs, each with a user override.
fn many_orgs(orgs: usize) -> String {
    let mut text = String::from("[defaults]\nrequests_per_minute = 100\n");
    for i in 0..orgs {
        text.push_str(&format!(
            "[orgs.org{i}]\nrequests_per_minute = {}\nmodels = [\"llama3*\", \"qwen*\"]\n[orgs.org{i}.users.u{i}]\nuser_requests_per_minute = 5\n",
            100 + i
        ));
    }
    text
}

#[tokio::test]
async fn memory_comes_back_after_a_huge_policy_is_replaced() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .policies("max_file_bytes = 67108864")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let base = gw.url();
    let orgs = 30_000;
    let dir = gw.policies_dir();
    let baseline = rss_kib(gw.pid());
    std::fs::write(dir.join("big.toml"), many_orgs(orgs)).expect("write");
    eventually(Duration::from_secs(60), "the huge policy loads", || async {
        let m = metrics(&base).await;
        metric_sum(&m, "corral_policy_reloads_total", &[("result", "ok")]) >= 1.0
    })
    .await;
    let peak = rss_kib(gw.pid());
    std::fs::write(dir.join("big.toml"), many_orgs(10)).expect("write");
    eventually(
        Duration::from_secs(20),
        "the small policy loads",
        || async {
            let m = metrics(&base).await;
            metric_sum(&m, "corral_policy_reloads_total", &[("result", "ok")]) >= 2.0
        },
    )
    .await;
    // jemalloc's background threads return freed pages after its decay time (10 s).
    let pid = gw.pid();
    let mut now = rss_kib(pid);
    for _ in 0..60 {
        if now < baseline + (peak - baseline) / 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = rss_kib(pid);
    }
    println!(
        "RSS: baseline {baseline} KiB, with {orgs} orgs {peak} KiB, after replacing {now} KiB"
    );
    assert!(
        peak > baseline + 50 * 1024,
        "the huge policy was really held: {peak} KiB"
    );
    assert!(
        now < baseline + (peak - baseline) / 4,
        "memory came back: baseline {baseline} KiB, peak {peak} KiB, now {now} KiB"
    );
    gw.stop().await;
}
