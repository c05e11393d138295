//! SIGTERM as an orchestrator expects it. Pingora's own graceful stop sleeps the whole grace
//! period even with nothing in flight, which makes every rolling update as slow as the
//! longest stream allowed. Here SIGTERM turns `/readyz` to 503 at once (load balancers stop
//! sending), waits only for the requests in flight (up to the grace period), lets the usage
//! writers flush, and then exits. SIGQUIT (graceful upgrade) and SIGINT keep Pingora's meaning.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

/// Requests in flight, and the drain's progress.
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Set when the drain ends: the time by which the writers must have flushed.
    finish: watch::Sender<Option<Instant>>,
    /// Each writer holds a sender; the receiver sees the channel close once all are done.
    tickets: Mutex<Option<mpsc::Sender<()>>>,
    done: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// One request in flight; dropping it (when the request's context goes) counts it out.
pub struct Flight(Arc<Drain>);

impl Drop for Flight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && self.0.is_draining() {
            self.0.idle.notify_waiters();
        }
    }
}

/// A background writer's part in the drain: it learns when to flush and, by dropping this,
/// tells the drain it has.
pub struct Flusher {
    finish: watch::Receiver<Option<Instant>>,
    _ticket: Option<mpsc::Sender<()>>,
}

impl Flusher {
    /// Resolves when the drain ends, with the deadline for the final flush.
    pub async fn finished(&mut self) -> Instant {
        loop {
            if let Some(at) = *self.finish.borrow_and_update() {
                return at;
            }
            if self.finish.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        let (tx, rx) = mpsc::channel(1);
        Arc::new(Drain {
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            finish: watch::channel(None).0,
            tickets: Mutex::new(Some(tx)),
            done: tokio::sync::Mutex::new(rx),
        })
    }

    pub fn enter(self: &Arc<Self>) -> Flight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Flight(Arc::clone(self))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// For a writer that must flush before the process exits.
    pub fn flusher(&self) -> Flusher {
        let ticket = self.tickets.lock().ok().and_then(|t| t.clone());
        Flusher {
            finish: self.finish.subscribe(),
            _ticket: ticket,
        }
    }

    /// Waits until nothing is in flight or `until`, whichever comes first; true when idle.
    async fn wait_idle(&self, until: Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// The whole drain: refuse readiness, wait for requests, have the writers flush.
    async fn run(&self, grace: Duration, flush_at_least: Duration) {
        self.draining.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        tracing::info!(
            in_flight = self.in_flight(),
            grace_s = grace.as_secs(),
            "SIGTERM received: draining (readyz now 503)"
        );
        let idle = self.wait_idle(deadline).await;
        if !idle {
            tracing::warn!(
                in_flight = self.in_flight(),
                "grace period over with requests still in flight: they are cut"
            );
        }
        let flush_by = deadline.max(Instant::now() + flush_at_least);
        self.tickets.lock().map(|mut t| t.take()).ok();
        let _ = self.finish.send(Some(flush_by));
        let mut done = self.done.lock().await;
        // A writer gets until `flush_by`; a moment more covers its own bookkeeping.
        let _ = tokio::time::timeout_at(flush_by + Duration::from_millis(500), done.recv()).await;
        tracing::info!("drained: exiting");
    }
}

/// Pingora's signal handling with SIGTERM replaced by the drain above. The drain runs before
/// Pingora hears of the stop, then asks it for a fast shutdown: there is nothing left to wait
/// for, and Pingora's graceful path would sleep the whole grace period again.
pub struct DrainingSignals {
    pub drain: Arc<Drain>,
    pub grace: Duration,
    /// The least time the final flush gets when the drain ends late.
    pub flush_at_least: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingSignals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = term.recv() => {
                tokio::select! {
                    _ = self.drain.run(self.grace, self.flush_at_least) => {}
                    _ = int.recv() => tracing::warn!("SIGINT during the drain: stopping now"),
                }
                ShutdownSignal::FastShutdown
            }
        }
    }
}
