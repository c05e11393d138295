//! The usage ledger: every charge appended to `usage_events` in PostgreSQL (the table the
//! backend's migrations own), in batches, off the request path. A slow or absent database
//! never delays a response: events wait in a bounded buffer and are written when it returns;
//! if the buffer fills, the loss is counted and logged, never silent. Shutdown flushes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bb8_postgres::PostgresConnectionManager;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

use crate::drain::Flusher;
use crate::metrics::Metrics;

/// One charge.
#[derive(Debug, Clone)]
pub struct UsageEvent {
    pub request_id: String,
    pub org: String,
    pub user: String,
    pub model: String,
    pub instance: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Epoch seconds.
    pub at: i64,
    /// The API key the request came with, if any (its public id).
    pub key_id: Option<String>,
}

type Pool = bb8::Pool<PostgresConnectionManager<NoTls>>;

pub struct Ledger {
    pool: Pool,
    tx: mpsc::Sender<UsageEvent>,
    rx: tokio::sync::Mutex<Option<mpsc::Receiver<UsageEvent>>>,
    metrics: Arc<Metrics>,
    /// Until when (ms on `clock`) the database counts as away after a failure: quota rebuilds
    /// then count from 0 at once instead of each waiting for a connection timeout.
    down_until_ms: AtomicU64,
    clock: Instant,
}

/// How long a database failure is trusted before the next rebuild tries again.
const DOWN_FOR: Duration = Duration::from_secs(5);

const BATCH: usize = 500;
/// One statement per batch; a request id already written (a retry after a lost answer) is
/// skipped, so nothing is counted twice.
const INSERT: &str = "INSERT INTO usage_events (request_id, org_id, user_id, model, instance, prompt_tokens, completion_tokens, at, key_id) \
     SELECT request_id, org_id, user_id, model, instance, prompt_tokens, completion_tokens, to_timestamp(at_s), key_id \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::float8[], $9::text[]) \
     AS e(request_id, org_id, user_id, model, instance, prompt_tokens, completion_tokens, at_s, key_id) \
     ON CONFLICT (request_id) DO NOTHING";

impl Ledger {
    /// Builds the pool lazily: the gateway starts (and serves) while the database is away.
    pub fn new(database_url: &str, buffer: usize, metrics: Arc<Metrics>) -> Result<Ledger, String> {
        let config: tokio_postgres::Config = database_url
            .parse()
            .map_err(|e| format!("DATABASE_URL: {e}"))?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = bb8::Pool::builder()
            .max_size(4)
            .connection_timeout(Duration::from_secs(2))
            // No reaper task: the pool is built before the runtime starts.
            .max_lifetime(None)
            .idle_timeout(None)
            .build_unchecked(manager);
        let (tx, rx) = mpsc::channel(buffer.max(1));
        Ok(Ledger {
            pool,
            tx,
            rx: tokio::sync::Mutex::new(Some(rx)),
            metrics,
            down_until_ms: AtomicU64::new(0),
            clock: Instant::now(),
        })
    }

    /// Queues an event; never waits. A full buffer (or a writer already shut down) drops the
    /// event, counted and logged.
    pub fn record(&self, event: UsageEvent) {
        if let Err(e) = self.tx.try_send(event) {
            self.metrics.ledger_dropped.inc();
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "usage ledger buffer full",
                mpsc::error::TrySendError::Closed(_) => "usage ledger already shut down",
            };
            tracing::error!(request_id = %e.into_inner().request_id, "{why}: event dropped");
        } else {
            self.metrics.ledger_pending.inc();
        }
    }

    /// Tokens the org used since `start` (epoch seconds), for rebuilding a quota counter.
    pub async fn usage_since(&self, org: &str, start: i64) -> u64 {
        if self.seems_down() {
            tracing::error!(org, "ledger database away; counting quota usage from 0");
            return 0;
        }
        let query = async {
            let conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let row = conn
                .query_one(
                    "SELECT COALESCE(SUM(COALESCE(prompt_tokens,0) + COALESCE(completion_tokens,0)), 0)::int8 \
                     FROM usage_events WHERE org_id = $1 AND at >= to_timestamp($2)",
                    &[&org, &(start as f64)],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok::<i64, String>(row.get(0))
        };
        let answer = tokio::time::timeout(Duration::from_secs(3), query).await;
        self.note(matches!(answer, Ok(Ok(_))));
        match answer {
            Ok(Ok(n)) => n.max(0) as u64,
            Ok(Err(e)) => {
                tracing::error!(org, error = %e, "cannot rebuild quota usage from the ledger; counting from 0");
                0
            }
            Err(_) => {
                tracing::error!(org, "ledger query timed out; counting quota usage from 0");
                0
            }
        }
    }

    /// Remembers whether the database just answered.
    fn note(&self, ok: bool) {
        let until = if ok {
            0
        } else {
            (self.clock.elapsed() + DOWN_FOR).as_millis() as u64
        };
        self.down_until_ms.store(until, Ordering::Relaxed);
    }

    fn seems_down(&self) -> bool {
        self.clock.elapsed().as_millis() < u128::from(self.down_until_ms.load(Ordering::Relaxed))
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), String> {
        let check = async {
            let conn = self.pool.get().await.map_err(|e| e.to_string())?;
            conn.simple_query("SELECT 1")
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        };
        let result = tokio::time::timeout(Duration::from_secs(2), check)
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r);
        self.note(result.is_ok());
        result
    }

    async fn write(&self, batch: &[UsageEvent]) -> Result<(), String> {
        let conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let col = |f: fn(&UsageEvent) -> String| batch.iter().map(f).collect::<Vec<String>>();
        let ids = col(|e| e.request_id.clone());
        let orgs = col(|e| e.org.clone());
        let users = col(|e| e.user.clone());
        let models = col(|e| e.model.clone());
        let instances = col(|e| e.instance.clone());
        let prompt: Vec<i64> = batch.iter().map(|e| e.prompt_tokens).collect();
        let completion: Vec<i64> = batch.iter().map(|e| e.completion_tokens).collect();
        let at: Vec<f64> = batch.iter().map(|e| e.at as f64).collect();
        let keys: Vec<Option<String>> = batch.iter().map(|e| e.key_id.clone()).collect();
        conn.execute(
            INSERT,
            &[
                &ids,
                &orgs,
                &users,
                &models,
                &instances,
                &prompt,
                &completion,
                &at,
                &keys,
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Writes what is buffered, retrying while the database is away.
    async fn flush(&self, pending: &mut VecDeque<UsageEvent>) -> bool {
        while !pending.is_empty() {
            let n = pending.len().min(BATCH);
            let batch: Vec<UsageEvent> = pending.iter().take(n).cloned().collect();
            let written = self.write(&batch).await;
            self.note(written.is_ok());
            match written {
                Ok(()) => {
                    pending.drain(..n);
                    self.metrics.ledger_pending.sub(n as i64);
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = pending.len(), "usage ledger write failed; will retry");
                    return false;
                }
            }
        }
        true
    }
}

/// The background writer.
pub struct LedgerWriter {
    ledger: Arc<Ledger>,
    /// After a graceful upgrade (SIGQUIT) Pingora drops this task when the grace period ends,
    /// while streams still finishing during it keep producing events: the writer goes on for
    /// `linger` after the shutdown notice, then spends at most `final_flush` on what is left.
    linger: Duration,
    final_flush: Duration,
    /// After SIGTERM the drain says when every request has ended and by when to be done.
    flusher: tokio::sync::Mutex<Option<Flusher>>,
}

impl LedgerWriter {
    /// Splits the grace period: its last quarter (at most 5 s) is kept back, half of it for
    /// the final flush and half as a margin before Pingora drops the task.
    pub fn new(ledger: Arc<Ledger>, grace_period: Duration, flusher: Flusher) -> LedgerWriter {
        let reserve = (grace_period / 4).min(Duration::from_secs(5));
        LedgerWriter {
            ledger,
            linger: grace_period - reserve,
            final_flush: reserve / 2,
            flusher: tokio::sync::Mutex::new(Some(flusher)),
        }
    }
}

#[async_trait]
impl BackgroundService for LedgerWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let ledger = &self.ledger;
        let Some(mut flusher) = self.flusher.lock().await.take() else {
            return;
        };
        let Some(mut rx) = ledger.rx.lock().await.take() else {
            return;
        };
        let mut pending: VecDeque<UsageEvent> = VecDeque::new();
        let stop = async {
            tokio::select! {
                _ = shutdown.changed() => {
                    tokio::time::sleep(self.linger).await;
                    tokio::time::Instant::now() + self.final_flush
                }
                at = flusher.finished() => at,
            }
        };
        let deadline = tokio::select! {
            _ = write_until_closed(ledger, &mut rx, &mut pending) => {
                tokio::time::Instant::now() + self.final_flush
            }
            at = stop => at,
        };
        // Later events are refused at the sender (and counted there); take what is queued.
        rx.close();
        while let Ok(e) = rx.try_recv() {
            pending.push_back(e);
        }
        while !pending.is_empty() && tokio::time::Instant::now() < deadline {
            // A connection attempt may hang: never past the deadline.
            let flushed = tokio::time::timeout_at(deadline, ledger.flush(&mut pending)).await;
            if flushed != Ok(true) {
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
                )
                .await;
            }
        }
        if !pending.is_empty() {
            ledger.metrics.ledger_dropped.inc_by(pending.len() as u64);
            tracing::error!(lost = pending.len(), "usage events not written at shutdown");
        }
    }
}

/// Writes events as they come, in batches, backing off while the database is away. Cancelling
/// it is safe: events leave `pending` only once written (a batch written but not yet removed
/// is skipped by the database on the next attempt).
async fn write_until_closed(
    ledger: &Ledger,
    rx: &mut mpsc::Receiver<UsageEvent>,
    pending: &mut VecDeque<UsageEvent>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(e) => {
                    pending.push_back(e);
                    while pending.len() < BATCH {
                        match rx.try_recv() { Ok(e) => pending.push_back(e), Err(_) => break }
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep(backoff), if !pending.is_empty() => {}
        }
        if ledger.flush(pending).await {
            backoff = Duration::from_millis(200);
        } else {
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
