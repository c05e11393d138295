//! `backend migrate` against a real PostgreSQL: from an empty database, again (nothing to
//! do), two at once (each migration applied once), an edited migration (refused), and the
//! errors an operator sees for a missing or unreachable database and a bad config file.

use std::path::Path;

use corral_tests::backend::{BackendBuilder, BackendProcess, TestDb};
use corral_tests::gateway::free_port;

fn migrations_src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../backend/migrations")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

async fn history(db: &TestDb) -> Vec<(i32, String, String, String)> {
    db.client()
        .await
        .query(
            "SELECT version, name, applied_on, checksum FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn migrations_from_empty_then_rerun_is_a_no_op() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder().database(&db.url());
    let out = be.run(&["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("applied V1__initial, V2__message_request_id, V3__api_keys"),
        "{}",
        text(&out.stdout)
    );
    let tables: Vec<String> = db
        .client()
        .await
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in [
        "api_key_secrets",
        "api_keys",
        "audit_log",
        "conversations",
        "idempotency_keys",
        "memberships",
        "messages",
        "orgs",
        "usage_events",
        "users",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
    let first = history(&db).await;
    assert_eq!(first.len(), 3);
    assert_eq!((first[0].0, first[0].1.as_str()), (1, "initial"));

    let out = be.run(&["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("up to date (version 3)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(history(&db).await, first, "a rerun changes nothing");
}

#[tokio::test]
async fn concurrent_migrate_applies_each_migration_once() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder().database(&db.url());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            be.command(d.path(), &["migrate"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn migrate")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    for out in &outputs {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let appliers = outputs
        .iter()
        .filter(|o| text(&o.stdout).contains("applied V1__initial"))
        .count();
    assert_eq!(appliers, 1, "exactly one run applies the migrations");
    assert_eq!(history(&db).await.len(), 3);
}

#[tokio::test]
async fn edited_migration_is_refused() {
    let db = TestDb::create().await;
    // A copy of the migrations read at run time (--migrations-dir), so the test can edit one.
    let dir = tempfile::tempdir().expect("dir");
    for entry in std::fs::read_dir(migrations_src()).expect("migrations dir") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let dir_arg = dir.path().to_str().expect("utf-8 path");
    let be = BackendProcess::builder().database(&db.url());
    let out = be.run(&["--migrations-dir", dir_arg, "migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let v1 = dir.path().join("V1__initial.sql");
    let mut sql = std::fs::read_to_string(&v1).expect("read");
    sql.push_str("\nCREATE TABLE sneaky (id int);\n");
    std::fs::write(&v1, sql).expect("edit");
    let out = be.run(&["--migrations-dir", dir_arg, "migrate"]);
    assert!(!out.status.success(), "an edited migration must be refused");
    let err = text(&out.stderr);
    assert!(
        err.contains("V1__initial") && err.contains("must never be edited"),
        "{err}"
    );
    // serve refuses too, before listening.
    let out = be.run(&["--migrations-dir", dir_arg, "serve"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("must never be edited"));
    let sneaky: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'sneaky'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(sneaky, 0, "nothing of the edited file ran");

    // The same for the migrations built into the binary: a recorded checksum that no longer
    // matches (as if the file had been edited before this build) is refused.
    let db2 = TestDb::create().await;
    let be2 = BackendProcess::builder().database(&db2.url());
    assert!(be2.run(&["migrate"]).status.success());
    db2.client()
        .await
        .execute(
            "UPDATE refinery_schema_history SET checksum = '12345' WHERE version = 2",
            &[],
        )
        .await
        .expect("tamper");
    let out = be2.run(&["migrate"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("V2__message_request_id"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn missing_or_unreachable_database_is_named() {
    let be = BackendBuilder::default();
    for cmd in ["migrate", "serve", "seed"] {
        let out = be.run(&[cmd]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = text(&out.stderr);
        assert!(err.contains("DATABASE_URL is not set"), "{cmd}: {err}");
    }
    let port = free_port();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/corral");
    let be = BackendBuilder::default().database(&url);
    for cmd in ["migrate", "serve"] {
        let out = be.run(&[cmd]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "DATABASE_URL (postgres://postgres@127.0.0.1:{port}/corral): cannot connect"
            )),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the password is never printed");
    }
    let out = BackendBuilder::default()
        .database("not a url at all")
        .run(&["migrate"]);
    assert!(text(&out.stderr).contains("DATABASE_URL=\"not a url at all\" is not valid"));
}

#[tokio::test]
async fn config_errors_name_file_and_line() {
    // The generated file starts with two lines of its own ([server], grace_period_s).
    let out = BackendBuilder::default()
        .toml("[database]\npool_size = 4\nurl_typo = \"x\"")
        .run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("backend.toml:5:") && err.contains("unknown field `url_typo`"),
        "{err}"
    );
    let out = BackendBuilder::default()
        .toml("[retention]\ndays = 0")
        .run(&["check"]);
    let err = text(&out.stderr);
    assert!(err.contains("backend.toml:4: retention.days = 0"), "{err}");
}

#[tokio::test]
async fn seed_is_idempotent() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder().database(&db.url());
    let out = be.run(&["seed", "--org", "acme", "--admin", "alice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("org acme: created"));
    let out = be.run(&["seed", "--org", "acme", "--admin", "alice"]);
    assert!(out.status.success());
    let said = text(&out.stdout);
    assert!(!said.contains("created"), "{said}");
    let client = db.client().await;
    for table in ["orgs", "users", "memberships"] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 1, "{table}");
    }
    let role: String = client
        .query_one(
            "SELECT role FROM memberships WHERE org_id = 'acme' AND user_id = 'alice'",
            &[],
        )
        .await
        .expect("membership")
        .get(0);
    assert_eq!(role, "admin");
}
