//! API keys on the backend (issue 11): the admin API, its isolation and idempotency, the
//! audit trail, what the database holds, and the `backend keys` command.

use corral_tests::backend::{Api, BackendProcess, TestDb, PEPPER};
use serde_json::{json, Value};

async fn backend(db: &TestDb) -> BackendProcess {
    BackendProcess::keyed(db).start().await
}

fn key_of(r: &Value) -> String {
    r["key"].as_str().expect("a key in the answer").to_string()
}

#[tokio::test]
async fn create_list_rotate_revoke_with_audit_and_no_secret_stored() {
    let db = TestDb::create().await;
    let be = backend(&db).await;
    let admin = Api::as_user(&be.url(), "acme", "alice", Some("admin"));

    let r = admin
        .post(
            "/api/orgs/acme/keys",
            &json!({"name": "ci", "models": ["llama3*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = key_of(&r.body);
    let id = r.body["id"].as_str().expect("id").to_string();
    assert!(key.starts_with(&format!("crl_{id}_")), "{key}");
    assert_eq!(r.body["prefix"], format!("crl_{id}_"));
    assert_eq!(r.body["last_four"], key[key.len() - 4..]);
    assert_eq!(r.body["audit"]["action"], "key.create");
    assert_eq!(r.body["audit"]["actor"], "alice");
    assert_eq!(
        r.headers["location"].to_str().expect("ascii"),
        format!("/api/orgs/acme/keys/{id}")
    );

    // The key authenticates at the backend, as `key:ci` of acme.
    let as_key = Api::new(&be.url(), Some(key.clone()));
    assert_eq!(as_key.get("/api/conversations").await.status, 200);

    let list = admin.get("/api/orgs/acme/keys").await;
    assert_eq!(list.status, 200);
    let items = list.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["state"], "active");
    assert!(
        !list.body.to_string().contains(&key[key.len() - 20..]),
        "no secret in lists"
    );

    // Rotation: old and new both work during the grace period.
    let r = admin
        .post(
            &format!("/api/orgs/acme/keys/{id}/rotate"),
            &json!({"grace_s": 3600}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new_key = key_of(&r.body);
    assert_ne!(new_key, key);
    assert!(r.body["old_valid_until"].is_string());
    assert_eq!(r.body["audit"]["action"], "key.rotate");
    assert_eq!(as_key.get("/api/conversations").await.status, 200);
    let as_new = Api::new(&be.url(), Some(new_key.clone()));
    assert_eq!(as_new.get("/api/conversations").await.status, 200);

    // A rotation with no grace ends the previous secrets at once.
    let r = admin
        .post(
            &format!("/api/orgs/acme/keys/{id}/rotate"),
            &json!({"grace_s": 0}),
        )
        .await;
    assert_eq!(r.status, 200);
    let newest = key_of(&r.body);
    assert_eq!(as_key.get("/api/conversations").await.status, 401);
    assert_eq!(as_new.get("/api/conversations").await.status, 401);
    let as_newest = Api::new(&be.url(), Some(newest.clone()));
    assert_eq!(as_newest.get("/api/conversations").await.status, 200);

    // Revocation: refused at once, with the reason.
    assert_eq!(
        admin
            .delete(&format!("/api/orgs/acme/keys/{id}"))
            .await
            .status,
        204
    );
    let r = as_newest.get("/api/conversations").await;
    assert_eq!(r.status, 401);
    let challenge = r.headers["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.contains("API key revoked"), "{challenge}");

    // The database holds hashes only, and an audit row per change.
    let client = db.client().await;
    let dump: String = client
        .query_one(
            "SELECT coalesce(string_agg(t::text, ' '), '') FROM \
             (SELECT row(k.*)::text AS t FROM api_keys k UNION ALL \
              SELECT row(s.*)::text FROM api_key_secrets s UNION ALL \
              SELECT row(i.*)::text FROM idempotency_keys i UNION ALL \
              SELECT row(a.*)::text FROM audit_log a) x",
            &[],
        )
        .await
        .expect("dump")
        .get(0);
    for k in [&key, &new_key, &newest] {
        let secret = &k[17..];
        assert!(!dump.contains(secret), "a secret is stored in clear");
    }
    let actions: Vec<String> = client
        .query(
            "SELECT action FROM audit_log WHERE target = $1 ORDER BY id",
            &[&id],
        )
        .await
        .expect("audit")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        actions,
        ["key.create", "key.rotate", "key.rotate", "key.revoke"]
    );
    be.stop().await;
}

#[tokio::test]
async fn idempotent_retries_return_the_same_secret_and_mint_nothing_new() {
    let db = TestDb::create().await;
    let be = backend(&db).await;
    let admin = Api::as_user(&be.url(), "acme", "alice", Some("admin"));
    let create = |idem: &'static str, name: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .send(
                    admin
                        .request(reqwest::Method::POST, "/api/orgs/acme/keys")
                        .header("Idempotency-Key", idem)
                        .json(&json!({"name": name})),
                )
                .await
        }
    };
    let first = create("req-1", "ci").await;
    let again = create("req-1", "ci").await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(key_of(&first.body), key_of(&again.body));
    let other_body = create("req-1", "other").await;
    assert_eq!(other_body.status, 409, "{:?}", other_body.body);
    let count: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM api_keys", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1);
    // Without the header, the same name is refused: rotate is the way to a new secret.
    let dup = admin
        .post("/api/orgs/acme/keys", &json!({"name": "ci"}))
        .await;
    assert_eq!(dup.status, 409);
    assert!(dup.body["error"]
        .as_str()
        .is_some_and(|m| m.contains("rotate")));

    let id = first.body["id"].as_str().expect("id");
    let rotate = |idem: &'static str| {
        let admin = admin.clone();
        let path = format!("/api/orgs/acme/keys/{id}/rotate");
        async move {
            admin
                .send(
                    admin
                        .request(reqwest::Method::POST, &path)
                        .header("Idempotency-Key", idem)
                        .json(&json!({"grace_s": 60})),
                )
                .await
        }
    };
    let r1 = rotate("rot-1").await;
    let r2 = rotate("rot-1").await;
    assert_eq!((r1.status, r2.status), (200, 200));
    assert_eq!(key_of(&r1.body), key_of(&r2.body));
    let secrets: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM api_key_secrets", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(secrets, 2, "one rotation, not two");
    be.stop().await;
}

#[tokio::test]
async fn only_admins_of_the_org_manage_its_keys() {
    let db = TestDb::create().await;
    let be = backend(&db).await;
    let acme = Api::as_user(&be.url(), "acme", "alice", Some("admin"));
    let r = acme
        .post(
            "/api/orgs/acme/keys",
            &json!({"name": "ci", "role": "member"}),
        )
        .await;
    let id = r.body["id"].as_str().expect("id").to_string();
    let member_key = key_of(&r.body);

    let other = Api::as_user(&be.url(), "globex", "bob", Some("admin"));
    assert_eq!(other.get("/api/orgs/acme/keys").await.status, 404);
    let rotate = format!("/api/orgs/acme/keys/{id}/rotate");
    assert_eq!(other.post(&rotate, &json!({})).await.status, 404);
    assert_eq!(
        other
            .delete(&format!("/api/orgs/acme/keys/{id}"))
            .await
            .status,
        404
    );
    // globex's own key id path with acme's id: still unknown in globex.
    assert_eq!(
        other
            .delete(&format!("/api/orgs/globex/keys/{id}"))
            .await
            .status,
        404
    );

    let member = Api::as_user(&be.url(), "acme", "carol", None);
    assert_eq!(member.get("/api/orgs/acme/keys").await.status, 403);
    let as_member_key = Api::new(&be.url(), Some(member_key));
    assert_eq!(as_member_key.get("/api/orgs/acme/keys").await.status, 403);

    // An admin key of the org manages keys, audited as the key.
    let r = acme
        .post(
            "/api/orgs/acme/keys",
            &json!({"name": "ops", "role": "admin"}),
        )
        .await;
    let admin_key = Api::new(&be.url(), Some(key_of(&r.body)));
    let r = admin_key
        .post("/api/orgs/acme/keys", &json!({"name": "made-by-key"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(r.body["audit"]["actor"]
        .as_str()
        .is_some_and(|a| a.starts_with("key:")));
    be.stop().await;
}

#[tokio::test]
async fn expired_and_malformed_keys_get_401_with_a_reason() {
    let db = TestDb::create().await;
    let be = backend(&db).await;
    let admin = Api::as_user(&be.url(), "acme", "alice", Some("admin"));
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let r = admin
        .post(
            "/api/orgs/acme/keys",
            &json!({"name": "short", "expires_at": soon}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = Api::new(&be.url(), Some(key_of(&r.body)));
    assert_eq!(key.get("/api/conversations").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = key.get("/api/conversations").await;
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .expect("ascii")
        .contains("API key expired"));
    let bad = Api::new(&be.url(), Some("crl_nope".into()));
    let r = bad.get("/api/conversations").await;
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .expect("ascii")
        .contains("malformed API key"));
    let bad = admin
        .post("/api/orgs/acme/keys", &json!({"name": "has space"}))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["error"]
        .as_str()
        .is_some_and(|m| m.starts_with("name:")));
    be.stop().await;
}

#[tokio::test]
async fn the_keys_command_bootstraps_and_refuses_a_second_create() {
    let db = TestDb::create().await;
    let cli = BackendProcess::builder()
        .database(&db.url())
        .env("API_KEY_PEPPER", PEPPER);
    let out = cli.run(&[
        "keys",
        "create",
        "--org",
        "acme",
        "--name",
        "first-admin",
        "--role",
        "admin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("crl_"), "{key}");
    let again = cli.run(&["keys", "create", "--org", "acme", "--name", "first-admin"]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already has a key named first-admin") && err.contains("rotate"),
        "{err}"
    );

    let be = backend(&db).await;
    let admin = Api::new(&be.url(), Some(key.clone()));
    let r = admin.get("/api/orgs/acme/keys").await;
    assert_eq!(
        r.status, 200,
        "the bootstrapped key administers its org: {:?}",
        r.body
    );
    let out = cli.run(&["keys", "revoke", "--org", "acme", "--name", "first-admin"]);
    assert!(out.status.success());
    assert_eq!(admin.get("/api/orgs/acme/keys").await.status, 401);
    let list = cli.run(&["keys", "list", "--org", "acme"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("revoked"));
    be.stop().await;
}
