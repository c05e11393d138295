//! The bb8 pool of tokio-postgres connections the API shares.
//!
//! The pool is what makes the backend recover from a database outage by itself: a broken
//! connection is dropped when it is returned (bb8-postgres checks `is_closed`) and tested
//! before reuse, and new ones are opened on demand, so once PostgreSQL is back the next
//! requests simply succeed. While it is down, a request waits at most the acquire timeout
//! and then gets 503.

use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::NoTls;

use super::{redact_url, DbError};
use crate::config::DatabaseConfig;

pub type Manager = PostgresConnectionManager<NoTls>;
pub type Connection<'a> = bb8::PooledConnection<'a, Manager>;

/// The pool, cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: bb8::Pool<Manager>,
}

/// Connection counts, for `/metrics`.
pub struct PoolStatus {
    pub connections: u32,
    pub idle: u32,
}

/// The tokio-postgres config of `url` with the timeouts of `db` applied.
fn pg_config(url: &str, db: &DatabaseConfig) -> Result<tokio_postgres::Config, String> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("DATABASE_URL is not a PostgreSQL connection string: {e}"))?;
    config.connect_timeout(db.connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("corral-backend");
    }
    // Runaway statements end on their own instead of holding a pooled connection.
    let timeout = format!("-c statement_timeout={}", db.statement_timeout.as_millis());
    let options = match config.get_options() {
        Some(existing) => format!("{existing} {timeout}"),
        None => timeout,
    };
    config.options(&options);
    Ok(config)
}

/// Opens one connection (for migrations, and to check `DATABASE_URL` before serving). The
/// error names `DATABASE_URL` and the server, never the password.
pub async fn connect_once(
    url: &str,
    db: &DatabaseConfig,
) -> Result<tokio_postgres::Client, String> {
    let config = pg_config(url, db)?;
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        let detail = match std::error::Error::source(&e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        };
        format!(
            "DATABASE_URL ({}): cannot connect: {detail}",
            redact_url(url)
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "migration connection closed");
        }
    });
    Ok(client)
}

impl Pool {
    /// Builds the pool without connecting (`connect_once` has checked the URL already);
    /// connections open on demand, `min_idle` of them kept warm.
    pub fn new(url: &str, db: &DatabaseConfig) -> Result<Pool, String> {
        let manager = PostgresConnectionManager::new(pg_config(url, db)?, NoTls);
        let inner = bb8::Pool::builder()
            .max_size(db.pool_size)
            .min_idle(Some(db.min_idle))
            .connection_timeout(db.acquire_timeout)
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Pool { inner })
    }

    /// A connection, or `Unavailable` after the acquire timeout.
    pub async fn get(&self) -> Result<Connection<'_>, DbError> {
        self.inner.get().await.map_err(DbError::from)
    }

    pub fn status(&self) -> PoolStatus {
        let state = self.inner.state();
        PoolStatus {
            connections: state.connections,
            idle: state.idle_connections,
        }
    }
}
