//! Test helpers for hostile-input regression tests: a misbehaving upstream and a raw client.
//!
//! The gateway sits between clients it does not trust and Ollama instances that can
//! crash, stall or send nonsense. Regression tests for those cases need both ends to
//! misbehave at the byte level, which the usual tools refuse to do: hyper repairs or
//! rejects bad framing, and reqwest will not send a malformed request. So both ends
//! here write HTTP/1.1 by hand.
//!
//! - [`HostileUpstream`] answers the gateway's health probes like a healthy Ollama, and
//!   answers model requests according to a [`Behaviour`] that tests switch at runtime
//!   (cut streams, giant lines, absurd token counts, duplicate final chunks, silence...).
//! - [`client`] sends exact bytes ([`raw_exchange`], [`send_slowly`]) and reads whatever
//!   comes back, including half a response from a server that closed on it.
//!
//! ```no_run
//! # async fn demo() {
//! use corral_tests::hostile::{Behaviour, HostileUpstream};
//! let upstream = HostileUpstream::start(Behaviour::CutMidLine { lines: 2 }).await;
//! // point the gateway at upstream.url(), send a chat, check what the client saw, then:
//! assert_eq!(upstream.in_flight(), 0);
//! upstream.stop().await;
//! # }
//! ```

mod behaviour;
pub mod client;
mod http1;
mod replies;
mod serve;
mod state;
#[cfg(test)]
mod tests;
mod upstream;

pub use behaviour::Behaviour;
pub use client::{
    chat_request, raw_exchange, read_lines_then_drop, read_stream_lines_then_drop, send_slowly,
    RawConnection, RawResponse, SlowSend,
};
pub use replies::PROMPT_TOKENS;
pub use state::ReceivedRequest;
pub use upstream::{HostileUpstream, HostileUpstreamBuilder};
