//! `./scripts/run --demo` as a user runs it: it prints the gateway's URL and two curl
//! lines; the first streams, the second (the same conversation's next turn) is served
//! from the prompt cache; the printed operator token opens the console; Ctrl-C stops every
//! process it started.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corral_tests::fake_ollama::gpu::chat_prompt_tokens;
use corral_tests::gateway::{bin_dir, binary, free_port};
use corral_tests::support::post_timed;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// The demo's process group, killed outright if the test fails half-way.
struct Demo {
    child: Child,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Demo {
    fn pgid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

/// Processes of group `pgid` still alive (zombies excluded), from /proc.
fn group_members(pgid: Pid) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // After the command name in parentheses: state, ppid, pgrp, ...
            let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.as_raw().to_string()
        })
        .collect()
}

/// The JSON body of a printed `curl ... -d '{...}'` line.
fn body_of(line: &str) -> Value {
    let start = line.find("-d '").expect("a -d argument") + 4;
    let end = line.rfind('\'').expect("closing quote");
    serde_json::from_str(&line[start..end]).expect("the curl body is JSON")
}

#[tokio::test]
async fn the_demo_streams_caches_the_next_turn_and_stops_on_ctrl_c() {
    binary("gateway");
    binary("fake-ollama");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = free_port();
    let child = Command::new("bash")
        .arg(root.join("scripts/run"))
        .arg("--demo")
        .env("CORRAL_DEMO_NO_BUILD", "1")
        .env("CORRAL_DEMO_BIN_DIR", bin_dir())
        .env("CORRAL_DEMO_PORT", port.to_string())
        .env_remove("GATEWAY_POOL_BALANCE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("start scripts/run --demo");
    let mut demo = Demo { child };
    let stdout = demo.child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Everything up to the last line it prints, within a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = Vec::new();
    while !printed.iter().any(|l: &String| l.starts_with("Ctrl-C")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => panic!(
                "the demo did not print its instructions:\n{}",
                printed.join("\n")
            ),
        }
    }
    let url = format!("http://127.0.0.1:{port}");
    let text = printed.join("\n");
    assert!(text.contains(&format!("the gateway at {url}")), "{text}");
    assert!(text.contains(&format!("{url}/metrics")) && text.contains(&format!("{url}/readyz")));
    let curls: Vec<&String> = printed
        .iter()
        .filter(|l| {
            l.trim_start()
                .starts_with(&format!("curl -N {url}/api/chat"))
        })
        .collect();
    assert_eq!(curls.len(), 2, "{text}");
    let (first, second) = (body_of(curls[0]), body_of(curls[1]));

    let client = reqwest::Client::new();
    let chat = format!("{url}/api/chat");
    let turn1 = post_timed(&client, &chat, &first).await;
    assert_eq!(turn1.status, 200, "{}", turn1.body);
    let lines1 = turn1.lines();
    assert!(lines1.len() > 10, "one line per token: {}", turn1.body);
    let first_byte = turn1.first_byte.expect("a first byte");
    assert!(
        first_byte * 2 < turn1.total,
        "streamed: first byte {first_byte:?}, whole reply {:?}",
        turn1.total
    );
    let reply: String = lines1
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(
        second["messages"][2]["content"], reply,
        "the printed follow-up carries the reply as streamed"
    );
    let evaluated1 = lines1.last().expect("final")["prompt_eval_count"]
        .as_u64()
        .expect("prompt_eval_count");

    let turn2 = post_timed(&client, &chat, &second).await;
    assert_eq!(turn2.status, 200, "{}", turn2.body);
    let evaluated2 = turn2.lines().last().expect("final")["prompt_eval_count"]
        .as_u64()
        .expect("prompt_eval_count");
    let whole2 = chat_prompt_tokens(&second, 4) as u64;
    assert!(
        evaluated2 * 3 < evaluated1 && evaluated2 * 5 < whole2,
        "turn 2 evaluated {evaluated2} of {whole2} tokens, turn 1 {evaluated1}"
    );

    for path in ["/metrics", "/readyz"] {
        let r = client.get(format!("{url}{path}")).send().await.expect(path);
        assert_eq!(r.status(), 200, "{path}");
    }

    // The console: the printed operator token signs in (the admin API answers it).
    let console = printed
        .iter()
        .position(|l| l.starts_with(&format!("Console: {url}/console/")))
        .expect("a console line");
    let token = printed[console + 1].trim();
    let r = client
        .get(format!("{url}/admin/api/pool"))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin api");
    assert_eq!(r.status(), 200, "the printed operator token is accepted");
    let pool: Value = r.json().await.expect("json");
    assert_eq!(pool["instances"].as_array().map(Vec::len), Some(2));
    let r = client
        .get(format!("{url}/console/"))
        .send()
        .await
        .expect("console");
    assert_eq!(r.status(), 200);

    // Ctrl-C: SIGINT to the whole foreground group, as a terminal sends it.
    assert!(
        group_members(demo.pgid()).len() >= 4,
        "script, gateway, two fakes"
    );
    killpg(demo.pgid(), Signal::SIGINT).expect("SIGINT the demo's group");
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exited = demo.child.try_wait().expect("try_wait").is_some();
        let left = group_members(demo.pgid());
        if exited && left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < stop_deadline,
            "still running 10 s after Ctrl-C: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        client.get(format!("{url}/healthz")).send().await.is_err(),
        "the gateway's port is closed"
    );
}
