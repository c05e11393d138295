//! Org isolation: another org's conversations cannot be read, listed, changed, deleted or
//! written to, by id or by listing, by a member or an admin of that other org, and identity
//! headers without a token change nothing. Its answers are the same 404 as for an unknown
//! id, so not even existence leaks.

use corral_tests::backend::{Api, BackendProcess, TestDb};
use serde_json::json;

#[tokio::test]
async fn another_org_cannot_touch_a_conversation() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder().database(&db.url()).start().await;
    let alice = Api::as_user(&be.url(), "acme", "alice", Some("admin"));
    let id = alice.create_conversation("acme secrets", "llama3:8b").await;
    let unknown = "00000000-0000-0000-0000-000000000000";

    for role in [None, Some("admin")] {
        let mallory = Api::as_user(&be.url(), "globex", "mallory", role);
        // Same user id in another org is still another org.
        let alice_elsewhere = Api::as_user(&be.url(), "globex", "alice", role);
        for other in [&mallory, &alice_elsewhere] {
            for target in [id.as_str(), unknown] {
                let path = format!("/api/conversations/{target}");
                let replies = [
                    other.get(&path).await,
                    other.patch(&path, &json!({"title": "pwned"})).await,
                    other.get(&format!("{path}/messages")).await,
                    other
                        .post(&format!("{path}/messages"), &json!({"content": "hi"}))
                        .await,
                    other.delete(&path).await,
                ];
                for r in replies {
                    assert_eq!(r.status, 404, "{target}: {:?}", r.body);
                    assert_eq!(
                        r.body,
                        json!({"error": "conversation not found", "code": "not_found"}),
                        "the same answer for another org's id and an unknown one"
                    );
                }
            }
            let r = other.get("/api/conversations").await;
            assert_eq!(r.body["items"], json!([]), "another org's list is empty");
            let r = other.get("/api/conversations?limit=100").await;
            assert_eq!(r.body["items"], json!([]));
        }
    }

    // Identity headers do not stand in for a token, nor override one.
    let r = Api::new(&be.url(), None)
        .send(
            Api::new(&be.url(), None)
                .request(reqwest::Method::GET, &format!("/api/conversations/{id}"))
                .header("X-Corral-Org", "acme")
                .header("X-Corral-User", "alice"),
        )
        .await;
    assert_eq!(r.status, 401);
    let mallory = Api::as_user(&be.url(), "globex", "mallory", Some("admin"));
    let r = mallory
        .send(
            mallory
                .request(reqwest::Method::GET, &format!("/api/conversations/{id}"))
                .header("X-Corral-Org", "acme")
                .header("X-Corral-User", "alice"),
        )
        .await;
    assert_eq!(r.status, 404);

    // Nothing changed for acme.
    let r = alice.get(&format!("/api/conversations/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["title"], "acme secrets");
    let n: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM messages", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "no message was written into acme's conversation");
    be.stop().await;
}

#[tokio::test]
async fn usage_report_is_for_the_orgs_admins() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder().database(&db.url()).start().await;
    let admin = Api::as_user(&be.url(), "acme", "carol", Some("admin"));
    let member = Api::as_user(&be.url(), "acme", "alice", None);
    let other_admin = Api::as_user(&be.url(), "globex", "gina", Some("admin"));
    assert_eq!(admin.get("/api/orgs/acme/usage").await.status, 200);
    let r = member.get("/api/orgs/acme/usage").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "forbidden");
    let r = other_admin.get("/api/orgs/acme/usage").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "not_found");
    assert_eq!(
        Api::new(&be.url(), None)
            .get("/api/orgs/acme/usage")
            .await
            .status,
        401
    );
    be.stop().await;
}
