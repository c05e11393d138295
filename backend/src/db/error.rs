//! Database failures, split the one way the API cares about: "the database is unavailable,
//! try again" (503 with `Retry-After`) versus a bug or a bad statement (500).

use std::fmt;

#[derive(Debug)]
pub enum DbError {
    /// No connection could be had, or the one in use broke: the database is down,
    /// restarting, unreachable or out of connections. Retrying later can succeed.
    Unavailable(String),
    /// Anything else: a failed statement, a constraint, a type mismatch.
    Query(tokio_postgres::Error),
}

impl DbError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Unavailable(why) => write!(f, "database unavailable: {why}"),
            DbError::Query(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for DbError {}

/// SQLSTATE classes and codes that mean "not now" rather than "never".
fn transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections...)
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" // admin/crash shutdown, cannot connect now
                | "40001" | "40P01" // serialization failure, deadlock
                | "57014" // statement timeout / query canceled
        )
}

fn io_source(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(state) if transient(state.code()) => DbError::Unavailable(e.to_string()),
            Some(_) => DbError::Query(e),
            // No SQLSTATE: either the socket failed or closed under us, or a client-side
            // problem (a type that does not convert), which is a bug.
            None if e.is_closed() || io_source(&e) => DbError::Unavailable(e.to_string()),
            None => DbError::Query(e),
        }
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for DbError {
    fn from(e: bb8::RunError<tokio_postgres::Error>) -> Self {
        match e {
            bb8::RunError::User(e) => DbError::Unavailable(e.to_string()),
            bb8::RunError::TimedOut => {
                DbError::Unavailable("timed out waiting for a pooled connection".into())
            }
        }
    }
}
