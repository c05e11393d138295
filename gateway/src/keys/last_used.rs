//! `api_keys.last_used_at`, written in batches off the request path: a request only marks
//! its key in memory; a background task writes the marked ones every few seconds in one
//! statement, never one write per request.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use super::KeyStore;

const FLUSH_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Pending(Mutex<HashSet<String>>);

impl Pending {
    pub fn mark(&self, id: &str) {
        if let Ok(mut ids) = self.0.lock() {
            if !ids.contains(id) {
                ids.insert(id.to_string());
            }
        }
    }

    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut ids| ids.drain().collect())
            .unwrap_or_default()
    }
}

pub struct LastUsedWriter {
    pub store: Arc<KeyStore>,
    /// Says when SIGTERM's drain is over: the last marks are written then.
    pub flusher: tokio::sync::Mutex<Option<crate::drain::Flusher>>,
}

impl LastUsedWriter {
    async fn flush(&self) {
        let ids = self.store.used.take();
        if ids.is_empty() {
            return;
        }
        let result = async {
            let conn = self.store.pool().get().await.map_err(|e| e.to_string())?;
            conn.execute(
                "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = result {
            // Put them back: written with the next batch once the database answers.
            for id in &ids {
                self.store.used.mark(id);
            }
            tracing::debug!(error = %e, keys = ids.len(), "last_used_at not written yet");
        }
    }
}

#[async_trait]
impl BackgroundService for LastUsedWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut flusher) = self.flusher.lock().await.take() else {
            return;
        };
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush().await,
                _ = shutdown.changed() => break,
                _ = flusher.finished() => break,
            }
        }
        self.flush().await;
    }
}
