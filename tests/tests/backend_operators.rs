//! Operators and the audit log (issue 14): a caller with a role in `auth.operator_roles` reads
//! the usage, keys and audit log of any org and manages its keys; nobody else gains anything
//! (another org is still 404, a member still 403); only an operator mints or rotates a key
//! carrying an operator role; `GET /api/orgs/{org}/audit` lists each change, newest first,
//! in the shape the changes answer with, paged by an opaque cursor.

use corral_tests::backend::{Api, BackendProcess, Reply, TestDb};
use serde_json::{json, Value};

async fn backend(db: &TestDb, toml: &str) -> BackendProcess {
    BackendProcess::keyed(db).toml(toml).start().await
}

fn id_of(r: &Reply) -> String {
    r.body["id"]
        .as_str()
        .expect("an id in the answer")
        .to_string()
}

/// Every item of `org`'s audit log, following the cursors with pages of `limit`.
async fn audit_pages(api: &Api, org: &str, limit: usize) -> (Vec<Value>, usize) {
    let (mut items, mut pages) = (Vec::new(), 0);
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/orgs/{org}/audit?limit={limit}&cursor={c}"),
            None => format!("/api/orgs/{org}/audit?limit={limit}"),
        };
        let r = api.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        pages += 1;
        let page = r.body["items"].as_array().expect("items");
        assert!(page.len() <= limit);
        items.extend(page.iter().cloned());
        match &r.body["next_cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            Value::Null => return (items, pages),
            other => panic!("next_cursor {other}"),
        }
    }
}

#[tokio::test]
async fn an_operator_manages_another_orgs_keys_and_the_audit_log_shows_each_change() {
    let db = TestDb::create().await;
    let be = backend(&db, "").await;
    let acme_admin = Api::as_user(&be.url(), "acme", "alice", Some("admin"));
    let operator = Api::as_user(&be.url(), "ops", "olga", Some("operator"));

    let ci = acme_admin
        .post("/api/orgs/acme/keys", &json!({"name": "ci"}))
        .await;
    assert_eq!(ci.status, 201, "{:?}", ci.body);
    let ci_id = id_of(&ci);
    let conversation = acme_admin.create_conversation("acme's", "llama3:8b").await;

    // Reads: usage and keys of an org the operator does not belong to.
    let r = operator.get("/api/orgs/acme/usage").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["org"], "acme");
    let r = operator.get("/api/orgs/acme/keys").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"][0]["id"], ci_id.as_str());
    // Only the org endpoints: the org's conversations stay its own.
    let r = operator
        .get(&format!("/api/conversations/{conversation}"))
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // Changes: create, rotate, revoke in acme, from the operator's address.
    let from = |req: reqwest::RequestBuilder| req.header("X-Real-IP", "203.0.113.7");
    let created = operator
        .send(from(
            operator
                .request(reqwest::Method::POST, "/api/orgs/acme/keys")
                .json(&json!({"name": "webui", "role": "admin"})),
        ))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let webui_id = id_of(&created);
    let audit = &created.body["audit"];
    assert_eq!(audit["actor"], "olga");
    assert_eq!(audit["ip"], "203.0.113.7");
    assert_eq!(
        audit["detail"],
        json!({"name": "webui", "role": "admin", "actor_org": "ops"}),
        "a change from another org says so"
    );
    // The new key works in acme, as an acme admin.
    let webui = Api::new(
        &be.url(),
        Some(created.body["key"].as_str().expect("key").into()),
    );
    assert_eq!(webui.get("/api/orgs/acme/keys").await.status, 200);

    let rotated = operator
        .send(from(
            operator
                .request(
                    reqwest::Method::POST,
                    &format!("/api/orgs/acme/keys/{webui_id}/rotate"),
                )
                .json(&json!({"grace_s": 0})),
        ))
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert_eq!(webui.get("/api/orgs/acme/keys").await.status, 401);

    let revoked = operator
        .send(from(operator.request(
            reqwest::Method::DELETE,
            &format!("/api/orgs/acme/keys/{ci_id}"),
        )))
        .await;
    assert_eq!(revoked.status, 204);

    // The audit log, as the org's admin and as the operator: newest first, the revoke on top,
    // and the items are exactly what the create and rotate answers carried.
    for reader in [&acme_admin, &operator] {
        let r = reader.get("/api/orgs/acme/audit").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["next_cursor"], Value::Null);
        let items = r.body["items"].as_array().expect("items");
        let actions: Vec<&str> = items
            .iter()
            .map(|i| i["action"].as_str().expect("action"))
            .collect();
        assert_eq!(
            actions,
            ["key.revoke", "key.rotate", "key.create", "key.create"]
        );
        let revoke = &items[0];
        assert_eq!(revoke["target"], ci_id.as_str());
        assert_eq!(revoke["actor"], "olga");
        assert_eq!(revoke["ip"], "203.0.113.7");
        assert_eq!(revoke["detail"], json!({"name": "ci", "actor_org": "ops"}));
        assert!(
            revoke["id"].is_i64() && revoke["at"].is_string(),
            "{revoke}"
        );
        assert_eq!(items[1], rotated.body["audit"]);
        assert_eq!(items[2], created.body["audit"]);
        assert_eq!(items[3], ci.body["audit"]);
        assert_eq!(items[3]["actor"], "alice");
        assert_eq!(items[3]["detail"], json!({"name": "ci", "role": null}));
    }

    // An operator key (made by an operator, in its own org) is an operator too.
    let r = operator
        .post(
            "/api/orgs/ops/keys",
            &json!({"name": "ops-bot", "role": "operator"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let bot = Api::new(&be.url(), Some(r.body["key"].as_str().expect("key").into()));
    let r = bot.get("/api/orgs/acme/audit?limit=1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"][0]["action"], "key.revoke");
    assert!(r.body["next_cursor"].is_string());
    // Each org's log holds its own changes only.
    let r = operator.get("/api/orgs/ops/audit").await;
    assert_eq!(r.body["items"].as_array().expect("items").len(), 1);

    // Nothing changed for everyone else.
    let globex_admin = Api::as_user(&be.url(), "globex", "gina", Some("admin"));
    let member = Api::as_user(&be.url(), "acme", "carol", None);
    for path in [
        "/api/orgs/acme/usage",
        "/api/orgs/acme/keys",
        "/api/orgs/acme/audit",
    ] {
        let r = globex_admin.get(path).await;
        assert_eq!(
            (r.status, &r.body),
            (404, &json!({"error": "org not found", "code": "not_found"})),
            "{path}"
        );
        let r = member.get(path).await;
        assert_eq!(
            (r.status, &r.body["code"]),
            (403, &json!("forbidden")),
            "{path}"
        );
    }
    let r = globex_admin
        .post("/api/orgs/acme/keys", &json!({"name": "sneaky"}))
        .await;
    assert_eq!(r.status, 404);
    be.stop().await;
}

#[tokio::test]
async fn only_an_operator_mints_or_rotates_a_key_with_an_operator_role() {
    let db = TestDb::create().await;
    let be = backend(&db, "[auth]\noperator_roles = [\"sre\", \"operator\"]").await;
    let acme_admin = Api::as_user(&be.url(), "acme", "alice", Some("admin"));
    let sre = Api::as_user(&be.url(), "ops", "sam", Some("sre"));

    for role in ["sre", "operator"] {
        let r = acme_admin
            .post("/api/orgs/acme/keys", &json!({"name": "up", "role": role}))
            .await;
        assert_eq!(r.status, 403, "{role}: {:?}", r.body);
        assert_eq!(r.body["code"], "forbidden");
        let message = r.body["error"].as_str().expect("message");
        assert!(
            message.contains(&format!("\"{role}\"")) && message.contains("operator"),
            "{message}"
        );
    }
    // An admin API key of the org is refused alike.
    let r = acme_admin
        .post(
            "/api/orgs/acme/keys",
            &json!({"name": "admin-key", "role": "admin"}),
        )
        .await;
    let admin_key = Api::new(&be.url(), Some(r.body["key"].as_str().expect("key").into()));
    let r = admin_key
        .post("/api/orgs/acme/keys", &json!({"name": "up", "role": "sre"}))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);

    // The operator may; the org's admin can then neither rotate it (the new secret would be
    // an operator's) nor replay the operator's idempotent answer (it holds the secret).
    let body = json!({"name": "sre-bot", "role": "sre"});
    let mint = |api: &Api| {
        api.request(reqwest::Method::POST, "/api/orgs/acme/keys")
            .header("Idempotency-Key", "mint-1")
            .json(&body)
    };
    let r = sre.send(mint(&sre)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let bot_id = id_of(&r);
    let r = acme_admin.send(mint(&acme_admin)).await;
    assert_eq!(r.status, 403, "no replay: {:?}", r.body);
    assert!(r.body.get("key").is_none());
    let rotate = format!("/api/orgs/acme/keys/{bot_id}/rotate");
    let r = acme_admin.post(&rotate, &json!({"grace_s": 0})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.body["error"]
        .as_str()
        .is_some_and(|m| m.contains("\"sre\"")));
    assert_eq!(sre.post(&rotate, &json!({"grace_s": 0})).await.status, 200);

    // Listing and revoking such a key take nothing: the org's admin may.
    let r = acme_admin.get("/api/orgs/acme/keys").await;
    assert!(r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|k| k["id"] == bot_id.as_str() && k["role"] == "sre"));
    let r = acme_admin
        .delete(&format!("/api/orgs/acme/keys/{bot_id}"))
        .await;
    assert_eq!(r.status, 204);

    // The refusals left nothing behind: the admin key, the operator's key, no other.
    let names: Vec<String> = db
        .client()
        .await
        .query("SELECT name FROM api_keys ORDER BY name", &[])
        .await
        .expect("keys")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["admin-key", "sre-bot"]);
    let r = acme_admin.get("/api/orgs/acme/audit").await;
    let actions: Vec<&str> = r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        ["key.revoke", "key.rotate", "key.create", "key.create"]
    );
    be.stop().await;
}

#[tokio::test]
async fn the_audit_list_is_paged_newest_first_and_checks_its_query() {
    let db = TestDb::create().await;
    let be = backend(&db, "").await;
    let admin = Api::as_user(&be.url(), "acme", "alice", Some("admin"));
    for i in 0..12 {
        let r = admin
            .post("/api/orgs/acme/keys", &json!({"name": format!("k{i}")}))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    // Rows sharing one timestamp (the id orders them), and another org's rows.
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO audit_log (org_id, actor, action, target, at) \
             SELECT 'acme', 'cli:root', 'key.revoke', 'old' || g, '2025-01-01T00:00:00Z' \
             FROM generate_series(1, 5) g; \
             INSERT INTO audit_log (org_id, actor, action, target) \
             SELECT 'globex', 'gina', 'key.create', 'g' || g FROM generate_series(1, 3) g;",
        )
        .await
        .expect("insert audit rows");
    let expected: Vec<i64> = client
        .query(
            "SELECT id FROM audit_log WHERE org_id = 'acme' ORDER BY at DESC, id DESC",
            &[],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(expected.len(), 17);

    for (limit, pages) in [(5, 4), (2, 9), (17, 1), (100, 1)] {
        let (items, n) = audit_pages(&admin, "acme", limit).await;
        let ids: Vec<i64> = items
            .iter()
            .map(|i| i["id"].as_i64().expect("id"))
            .collect();
        assert_eq!(ids, expected, "limit {limit}: newest first, each once");
        assert_eq!(n, pages, "limit {limit}");
    }
    let r = admin.get("/api/orgs/acme/audit").await;
    assert_eq!(
        r.body["items"].as_array().expect("items").len(),
        17,
        "default 20"
    );

    // A new change shows up on top of the first page; a cursor taken before it still
    // continues where it was.
    let first = admin.get("/api/orgs/acme/audit?limit=5").await;
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    let r = admin
        .post("/api/orgs/acme/keys", &json!({"name": "late"}))
        .await;
    let r2 = admin.get("/api/orgs/acme/audit?limit=1").await;
    assert_eq!(r2.body["items"][0], r.body["audit"]);
    let r = admin
        .get(&format!("/api/orgs/acme/audit?limit=5&cursor={cursor}"))
        .await;
    assert_eq!(r.body["items"][0]["id"], expected[5]);

    // Bad queries name the field.
    for bad in ["limit=0", "limit=101", "limit=ten", "limit=-1"] {
        let r = admin.get(&format!("/api/orgs/acme/audit?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
        assert_eq!(r.body["code"], "bad_request");
        assert!(
            r.body["error"]
                .as_str()
                .is_some_and(|m| m.starts_with("limit:")),
            "{bad}: {:?}",
            r.body
        );
    }
    let keys_cursor = admin.get("/api/orgs/acme/keys?limit=1").await.body["next_cursor"]
        .as_str()
        .expect("a keys cursor")
        .to_string();
    for bad in ["!!", "YTE6", keys_cursor.as_str()] {
        let r = admin
            .get(&format!("/api/orgs/acme/audit?cursor={bad}"))
            .await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .is_some_and(|m| m.starts_with("cursor:")),
            "{bad}: {:?}",
            r.body
        );
    }

    // Who may read it.
    let globex_admin = Api::as_user(&be.url(), "globex", "gina", Some("admin"));
    assert_eq!(globex_admin.get("/api/orgs/acme/audit").await.status, 404);
    let (globex, _) = audit_pages(&globex_admin, "globex", 20).await;
    assert_eq!(globex.len(), 3, "each org its own rows");
    let member = Api::as_user(&be.url(), "acme", "carol", None);
    assert_eq!(member.get("/api/orgs/acme/audit").await.status, 403);
    assert_eq!(
        Api::new(&be.url(), None)
            .get("/api/orgs/acme/audit")
            .await
            .status,
        401
    );
    be.stop().await;
}
