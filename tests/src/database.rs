//! A PostgreSQL database of the test's own (created, migrated by the real `backend migrate`,
//! dropped at the end), so runs never interfere.

use std::process::Command;

use tokio_postgres::NoTls;

pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl TestDb {
    /// Creates the database and applies the backend's migrations.
    pub async fn create() -> TestDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("corral_gw_{}_{nanos}", std::process::id());
        let (client, conn) = tokio_postgres::connect(ADMIN_URL, NoTls)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (user postgres)");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let out = Command::new(crate::gateway::binary("backend"))
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .output()
            .expect("run backend migrate");
        assert!(
            out.status.success(),
            "backend migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestDb {
            name,
            url,
            admin_url: ADMIN_URL.to_string(),
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect test db");
        tokio::spawn(conn);
        client
    }

    /// Sum of prompt + completion tokens in `usage_events` for `org`, and the row count.
    pub async fn ledger(&self, org: &str) -> (i64, i64) {
        let row = self
            .client()
            .await
            .query_one(
                "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0)::int8, COUNT(*) FROM usage_events WHERE org_id = $1",
                &[&org],
            )
            .await
            .expect("ledger query");
        (row.get(0), row.get(1))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = Command::new("psql")
            .args([&self.admin_url, "-q", "-c", &sql])
            .output();
    }
}
