//! A chat turn through the pool: the history goes to the gateway's `/api/chat` (so the org's
//! limits and quotas apply to it), the reply streams back to the caller as it arrives, and a
//! task that outlives the caller's connection stores it.
//!
//! - `upstream.rs`: the call to the gateway, and its refusals passed through.
//! - `relay.rs`: the task that forwards the stream and stores the reply however it ends.
//! - `ndjson.rs`: the incremental reader of the reply's text and token counts.

mod ndjson;
pub mod relay;
pub mod upstream;
