//! Reloading certificates when their files change or on SIGHUP. A reload that fails (a key
//! that does not match, a half-written file) keeps the previous certificates and is logged.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::broadcast;

use super::{CertStore, SniResolver};
use crate::config::TlsConfig;
use crate::metrics::Metrics;

pub struct CertReloader {
    pub config: TlsConfig,
    pub resolver: Arc<SniResolver>,
    pub metrics: Arc<Metrics>,
    /// SIGHUP, from [`crate::signals::HangupListener`].
    pub hangups: std::sync::Mutex<Option<broadcast::Receiver<()>>>,
}

impl CertReloader {
    fn files(&self) -> Vec<std::path::PathBuf> {
        let mut files = vec![
            self.config.default_cert.cert_file.clone(),
            self.config.default_cert.key_file.clone(),
        ];
        for c in &self.config.certificates {
            files.push(c.files.cert_file.clone());
            files.push(c.files.key_file.clone());
        }
        files
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.files()
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    }

    fn reload(&self, why: &str) {
        match CertStore::load(&self.config) {
            Ok(store) => {
                store.export_expiry(&self.metrics);
                self.resolver.store.store(Arc::new(store));
                self.metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(reason = why, "TLS certificates reloaded");
            }
            Err(e) => {
                self.metrics.tls_reloads.with_label_values(&["error"]).inc();
                tracing::error!(reason = why, error = %e, "TLS certificate reload failed; keeping the previous certificates");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = self.hangups.lock().ok().and_then(|mut h| h.take());
        let mut last = self.stamps();
        let mut tick = tokio::time::interval(self.config.watch_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = self.stamps();
                    if now != last {
                        last = now;
                        self.reload("file change");
                    }
                }
                Ok(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    last = self.stamps();
                    self.reload("SIGHUP");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
