//! What happens to a new client connection before Pingora's HTTP code sees it.
//!
//! Pingora 0.9 reads a request's headers up to 1 MiB with no deadline of its own (only a
//! per-read timeout; configurable limits are cloudflare/pingora#993), so 500 slow or bloated
//! connections could hold sockets and memory at will. The header guard reads each new
//! connection's first request header itself, under `server.header_timeout_ms` and
//! `server.max_header_bytes`, answers 408 or 431 when they are broken, and otherwise hands
//! the connection on with those bytes replayed in front. Later requests on a kept-alive
//! connection are checked for size in `request_filter` (431) and bounded in time by
//! Pingora's keep-alive timeout.

mod header_guard;
mod replay;

pub use header_guard::{HeaderGuard, HeaderLimits};
