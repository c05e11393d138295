//! The operator console in a real browser (headless Chromium through chromedriver), against
//! the real gateway, backend and PostgreSQL: an operator watches the pool, the orgs and the
//! policy; an org admin makes a key, uses it with curl, sees the usage bar move, rotates and
//! revokes it. No view may log a script error or a CSP violation. Each view's screenshot is
//! saved under target/debug/console-screenshots/.

use std::time::Duration;

use corral_tests::backend::{token, BackendProcess, TestDb, PEPPER, SECRET};
use corral_tests::browser::Browser;
use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;

/// The Enter key, as WebDriver types it.
const ENTER: &str = "\u{E007}";

const POLICY: &str = r#"
[defaults]
requests_per_minute = 0
user_requests_per_minute = 0

[orgs.acme]
quota = { soft_tokens = 10, hard_tokens = 1000 }

[orgs.globex]
quota = { soft_tokens = 1000, hard_tokens = 2000 }
"#;

struct Stack {
    _db: TestDb,
    _backend: BackendProcess,
    fakes: Vec<FakeOllama>,
    gw: GatewayProcess,
}

async fn stack() -> Stack {
    let db = TestDb::create().await;
    let backend = BackendProcess::keyed(&db).start().await;
    let a = FakeOllama::builder()
        .models(&["llama3.2:3b", "qwen2.5:7b"])
        .loaded(&["llama3.2:3b"])
        .tokens(3)
        .start()
        .await;
    let b = FakeOllama::builder()
        .models(&["llama3.2:3b"])
        .loaded(&["llama3.2:3b"])
        .tokens(3)
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url(), b.url()])
        .env("JWT_SECRET", SECRET)
        .env("API_KEY_PEPPER", PEPPER)
        .env("DATABASE_URL", &db.url())
        .env("BACKEND_URL", &backend.url())
        .policy("orgs.toml", POLICY)
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    Stack {
        _db: db,
        _backend: backend,
        fakes: vec![a, b],
        gw,
    }
}

async fn sign_in(browser: &Browser, gw: &GatewayProcess, credential: &str) {
    browser.goto(&format!("{}/console/", gw.url())).await;
    browser.fill("#signin-token", credential).await;
    browser
        .find("#signin-token")
        .await
        .send_keys(ENTER)
        .await
        .expect("press Enter");
}

/// A chat through the gateway with curl, as a user would try a key; the HTTP status. (Run
/// without blocking: the fake Ollama answers on this test's own runtime.)
async fn curl_chat(gw: &GatewayProcess, key: &str) -> u16 {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("{}/api/chat", gw.url()))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["-d", r#"{"model": "llama3.2:3b", "stream": false, "messages": [{"role": "user", "content": "hi"}]}"#])
        .output()
        .await
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

async fn no_console_errors(browser: &Browser, allowed: &[u16]) {
    let errors = browser.console_errors(allowed).await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}

#[tokio::test]
async fn an_operator_watches_the_pool_orgs_and_policy() {
    let mut s = stack().await;
    let browser = Browser::start(1280, 900).await;

    // A bad key: the sign-in page says why, and stays.
    sign_in(
        &browser,
        &s.gw,
        "crl_nosuchkey_0000000000000000000000000000000000000000000",
    )
    .await;
    let error = browser.text("#signin-error").await;
    assert!(error.contains("not accepted"), "{error}");
    browser.screenshot("signin-error").await;
    // A member of an org: signed out again with the reason.
    sign_in(&browser, &s.gw, &token("acme", "bob", None)).await;
    browser
        .wait_until(
            "the member message",
            "document.querySelector('#signin-error').textContent.includes('member of org')",
        )
        .await;

    sign_in(&browser, &s.gw, &token("ops", "olga", Some("operator"))).await;
    browser
        .wait_until("two healthy instances", "document.querySelectorAll('[data-testid=pool-instance][data-healthy=true]').length === 2")
        .await;
    let loaded = browser
        .all("[data-testid=loaded-model][data-model='llama3.2:3b']")
        .await;
    assert_eq!(loaded.len(), 2, "each instance lists its loaded model");
    let whoami = browser.text("#whoami").await;
    assert!(
        whoami.contains("olga") && whoami.contains("operator"),
        "{whoami}"
    );
    let csp_header = reqwest::get(format!("{}/console/", s.gw.url()))
        .await
        .unwrap()
        .headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp_header.contains("script-src 'self'"), "{csp_header}");
    browser.screenshot("pool").await;

    // One instance dies: the page shows it unhealthy within the health interval and a poll.
    let b = s.fakes.pop().unwrap();
    let b_url = b.url();
    b.stop().await;
    let dead = format!("[data-testid=pool-instance][data-url='{b_url}'][data-healthy=false]");
    browser
        .wait_until(
            "the stopped instance to turn unhealthy",
            &format!("document.querySelector(\"{dead}\") !== null"),
        )
        .await;
    browser.screenshot("pool-unhealthy").await;

    // The orgs and their usage bars.
    browser.click("#nav-orgs").await;
    browser
        .find("[data-testid=org-usage][data-org=acme] [data-testid=org-usage-bar]")
        .await;
    browser
        .find("[data-testid=org-usage][data-org=globex]")
        .await;
    browser.screenshot("orgs-operator").await;

    // The policy, then a refused edit shown with its file and line.
    browser.click("#nav-policy").await;
    let loaded_at = browser.text("#policy-loaded-at").await;
    assert!(!loaded_at.is_empty());
    assert_eq!(browser.text("#policy-last-error").await.trim(), "none");
    std::fs::write(
        s.gw.policies_dir().join("broken.toml"),
        "[orgs.initech]\nburst = -1\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    browser.click("#policy-refresh").await;
    browser
        .wait_until("the refused edit", "(document.querySelector('[data-testid=policy-error-location]') || {textContent: ''}).textContent.includes('broken.toml:2')")
        .await;
    browser
        .find("[data-testid=policy-org][data-org=acme]")
        .await;
    browser.screenshot("policy").await;

    no_console_errors(&browser, &[401, 403]).await;
    browser.click("#signout").await;
    browser.find("#signin-token").await;
    let stored = browser
        .client
        .execute("return sessionStorage.length;", vec![])
        .await
        .unwrap();
    assert_eq!(stored, 0, "signing out forgets the credential");
    browser.close().await;
}

#[tokio::test]
async fn an_org_admin_makes_uses_rotates_and_revokes_a_key() {
    let s = stack().await;
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &s.gw, &token("acme", "ann", Some("admin"))).await;
    browser.find("[data-testid=org-usage][data-org=acme]").await;
    // Their org only: the operator's views are hidden, another org is neither listed nor
    // readable through the API.
    assert!(browser
        .all("[data-testid=org-usage][data-org=globex]")
        .await
        .is_empty());
    let hidden = browser.client.execute("return document.querySelector('#nav-pool').hidden && document.querySelector('#nav-policy').hidden;", vec![]).await.unwrap();
    assert_eq!(hidden, true);
    let r = reqwest::Client::new()
        .get(format!("{}/admin/api/orgs/globex", s.gw.url()))
        .bearer_auth(token("acme", "ann", Some("admin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Create: the secret is shown once, with the audit entry.
    browser.click("#nav-keys").await;
    browser.fill("#create-name", "webui").await;
    browser.click("#create-submit").await;
    browser
        .wait_until(
            "the new secret",
            "document.querySelector('#secret-value').textContent.startsWith('crl_')",
        )
        .await;
    let secret = browser.text("#secret-value").await;
    assert!(secret.starts_with("crl_"), "{secret}");
    browser
        .wait_until("the creation's audit entry", "(document.querySelector('#audit-entry') || {dataset: {}}).dataset.action === 'key.create'")
        .await;
    browser
        .find("[data-testid=key-row][data-key-name=webui][data-state=active]")
        .await;
    browser.screenshot("keys-created").await;

    // The key works through the gateway, and the org's usage bar moves.
    assert_eq!(curl_chat(&s.gw, &secret).await, 200);
    browser.click("#nav-orgs").await;
    browser.click("#orgs-refresh").await;
    browser
        .wait_until("usage to show", "Number((document.querySelector('[data-testid=org-usage][data-org=acme] [data-testid=org-usage-bar]') || {dataset: {}}).dataset.used || 0) > 0")
        .await;
    browser.screenshot("orgs").await;

    // Rotate with no grace: a new secret works, the old one is refused.
    browser.click("#nav-keys").await;
    let row = "[data-testid=key-row][data-key-name=webui]";
    browser
        .find(&format!(
            "{row} [data-testid=key-rotate-grace] option[value='0']"
        ))
        .await
        .click()
        .await
        .unwrap();
    browser
        .click(&format!("{row} [data-testid=key-rotate]"))
        .await;
    browser
        .wait_until("the rotation's audit entry", "(document.querySelector('#audit-entry') || {dataset: {}}).dataset.action === 'key.rotate'")
        .await;
    let rotated = browser.text("#secret-value").await;
    assert!(
        rotated.starts_with("crl_") && rotated != secret,
        "{rotated}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while curl_chat(&s.gw, &secret).await != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old secret still works"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(curl_chat(&s.gw, &rotated).await, 200);

    // Revoke, confirmed in the dialog: refused at once.
    browser
        .click(&format!("{row} [data-testid=key-revoke]"))
        .await;
    browser.click("#confirm-ok").await;
    browser
        .wait_until("the revocation's audit entry", "(document.querySelector('#audit-entry') || {dataset: {}}).dataset.action === 'key.revoke'")
        .await;
    browser.find(&format!("{row}[data-state=revoked]")).await;
    browser.screenshot("keys").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while curl_chat(&s.gw, &rotated).await != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A phone: nothing scrolls sideways.
    browser.client.set_window_size(360, 800).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wide = browser
        .client
        .execute("return document.documentElement.scrollWidth;", vec![])
        .await
        .unwrap();
    assert!(
        wide.as_u64().is_some_and(|w| w <= 360),
        "page is {wide} px wide at 360"
    );
    browser.screenshot("keys-phone").await;
    no_console_errors(&browser, &[]).await;
    browser.close().await;
}
