//! [`HostileUpstream`]: a fake Ollama that stays healthy to probes and misbehaves on
//! model requests, over raw TCP so it can break HTTP framing on purpose.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::behaviour::Behaviour;
use super::serve::serve_connection;
use super::state::{ReceivedRequest, Shared};

/// Settings of a [`HostileUpstream`] before it starts.
#[derive(Debug, Clone)]
pub struct HostileUpstreamBuilder {
    models: Vec<String>,
    behaviour: Behaviour,
}

impl Default for HostileUpstreamBuilder {
    fn default() -> Self {
        Self {
            models: vec!["llama3:8b".to_string()],
            behaviour: Behaviour::default(),
        }
    }
}

impl HostileUpstreamBuilder {
    /// Models `/api/tags` lists (default `["llama3:8b"]`), so the gateway routes them
    /// here. The first is echoed in replies to requests that name no model.
    pub fn models(mut self, names: &[&str]) -> Self {
        self.models = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The initial behaviour (default `Normal { tokens: 4 }`).
    pub fn behaviour(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// Binds 127.0.0.1 on a free port; serving when this returns.
    ///
    /// # Panics
    /// When no port can be bound: a test cannot go on without its upstream.
    pub async fn start(self) -> HostileUpstream {
        self.try_start()
            .await
            .unwrap_or_else(|e| panic!("hostile upstream cannot bind 127.0.0.1: {e}"))
    }

    /// Like [`start`](Self::start), returning the bind error instead of panicking.
    pub async fn try_start(self) -> std::io::Result<HostileUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::new(self.behaviour, self.models));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        Ok(HostileUpstream {
            shared,
            port,
            control: Mutex::new(Some(Control { stop, task })),
        })
    }
}

struct Control {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running hostile upstream. Dropping it aborts it like [`stop`](Self::stop).
pub struct HostileUpstream {
    shared: Arc<Shared>,
    port: u16,
    control: Mutex<Option<Control>>,
}

impl std::fmt::Debug for HostileUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileUpstream")
            .field("url", &self.url())
            .field("behaviour", &self.shared.behaviour())
            .finish()
    }
}

impl HostileUpstream {
    pub fn builder() -> HostileUpstreamBuilder {
        HostileUpstreamBuilder::default()
    }

    /// Starts with the default models and this behaviour.
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::builder().behaviour(behaviour).start().await
    }

    /// `http://127.0.0.1:PORT`, for the gateway's pool configuration.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, for [`raw_exchange`](super::raw_exchange).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes how the next model requests are answered; exchanges already under way
    /// keep the behaviour they started with.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.set_behaviour(behaviour);
    }

    /// Replaces the models `/api/tags` lists.
    pub fn set_models(&self, names: &[&str]) {
        self.shared
            .set_models(names.iter().map(|n| n.to_string()).collect());
    }

    /// Makes health probes (`/api/tags`, `/api/ps`, ...) answer 500, as a sick instance would.
    pub fn set_probes_failing(&self, yes: bool) {
        self.shared.set_probes_failing(yes);
    }

    /// POST requests received so far (probes are GETs and are not counted).
    pub fn model_requests(&self) -> usize {
        self.shared.model_requests()
    }

    /// Model exchanges being served right now: each counts from its request until its
    /// handler finishes (last byte written, or the peer noticed gone), so a gateway
    /// that abandons an upstream exchange shows up here dropping to 0.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// The highest [`in_flight`](Self::in_flight) seen: what a concurrency cap let through.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight()
    }

    /// Every request received, probes included, oldest first (the last 4096).
    pub fn requests_log(&self) -> Vec<ReceivedRequest> {
        self.shared.requests_log()
    }

    /// The most recent POST, which is what the gateway forwarded for a model request.
    pub fn last_model_request(&self) -> Option<ReceivedRequest> {
        self.requests_log()
            .into_iter()
            .rev()
            .find(|r| r.method == "POST")
    }

    /// Stops listening and drops every connection at once, like a killed process.
    /// Later calls do nothing.
    pub async fn stop(&self) {
        let control = self
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(control) = control {
            let _ = control.stop.send(());
            let _ = control.task.await;
        }
    }
}

impl Drop for HostileUpstream {
    fn drop(&mut self) {
        let control = self
            .control
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(control) = control {
            control.task.abort();
        }
    }
}

/// Accepts until `stop` fires, then drops the listener and aborts every connection.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}
