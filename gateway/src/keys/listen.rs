//! The change channel: `LISTEN corral_api_keys` on a connection of its own. Each
//! announcement (a key created, rotated or revoked by the backend) drops that key from the
//! cache, so the next request reads it again: a revocation reaches every gateway within the
//! time a notification takes. A lost connection is retried every second; until it is back,
//! the cache keeps entries only briefly (see `KeyStore::cached`), and on reconnecting the
//! whole cache is dropped (announcements may have been missed meanwhile).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_auth::key_store::CHANGES_CHANNEL;
use futures::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio_postgres::{AsyncMessage, NoTls};

use super::KeyStore;

pub struct ChangeListener {
    pub store: Arc<KeyStore>,
}

impl ChangeListener {
    /// Listens until the connection fails; `Err` says why.
    async fn listen_once(&self) -> Result<(), String> {
        let (client, mut connection) = tokio_postgres::connect(&self.store.database_url, NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        let statement = format!("LISTEN {CHANGES_CHANNEL}");
        let listen = client.batch_execute(&statement);
        tokio::pin!(listen);
        // The connection must be polled for the LISTEN to complete.
        loop {
            tokio::select! {
                done = &mut listen => { done.map_err(|e| e.to_string())?; break; }
                msg = messages.next() => match msg {
                    Some(Ok(m)) => self.on_message(m),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("connection closed".into()),
                },
            }
        }
        self.store.forget(None);
        self.store.listening.store(true, Ordering::Release);
        tracing::info!(channel = CHANGES_CHANNEL, "listening for API key changes");
        while let Some(msg) = messages.next().await {
            self.on_message(msg.map_err(|e| e.to_string())?);
        }
        Err("connection closed".into())
    }

    fn on_message(&self, msg: AsyncMessage) {
        if let AsyncMessage::Notification(n) = msg {
            tracing::debug!(
                key_id = n.payload(),
                "API key changed: dropped from the cache"
            );
            self.store.forget(Some(n.payload()));
        }
    }
}

#[async_trait]
impl BackgroundService for ChangeListener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                result = self.listen_once() => {
                    let was = self.store.listening.swap(false, Ordering::AcqRel);
                    if let Err(e) = result {
                        if was {
                            tracing::warn!(error = %e, "API key change channel lost: cached keys now live 1 s");
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
