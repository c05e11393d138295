//! PostgreSQL: the pool (`pool.rs`), migrations (`migrate.rs`), the one place database
//! failures are classified (`error.rs`), and the queries, one file per table family.

pub mod audit;
pub mod conversations;
mod error;
pub mod keys;
pub mod messages;
pub mod migrate;
mod pool;
pub mod retention;
pub mod seed;
pub mod usage;

pub use error::DbError;
pub use pool::{connect_once, Pool, PoolStatus};

/// A `DATABASE_URL` fit for messages: user, host, port and database, never the password.
pub fn redact_url(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "<unparsable>".into();
    };
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{}:{}/{}",
        config.get_user().unwrap_or(""),
        host,
        port,
        config.get_dbname().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn password_never_shown() {
        let shown = super::redact_url("postgres://app:s3cret@db.example:6543/corral");
        assert_eq!(shown, "postgres://app@db.example:6543/corral");
    }
}
