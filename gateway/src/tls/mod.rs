//! TLS termination: certificates chosen by SNI, reloaded from disk without dropping
//! connections (a reload swaps the snapshot new handshakes read; open connections keep theirs).

mod certs;
mod reload;

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use certs::CertStore;
pub use reload::CertReloader;

/// The rustls certificate resolver: reads the current [`CertStore`] on every handshake.
#[derive(Debug)]
pub struct SniResolver {
    pub store: ArcSwap<CertStore>,
}

impl SniResolver {
    pub fn new(store: CertStore) -> Arc<Self> {
        Arc::new(Self {
            store: ArcSwap::from_pointee(store),
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.store.load().pick(hello.server_name()))
    }
}
