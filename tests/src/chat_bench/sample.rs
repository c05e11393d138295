//! Watching the simulated instances during a run: their counters before and after
//! (`GET /sim/stats`), and how many requests each has in flight, every 50 ms, to see
//! whether routing spreads the load or piles it onto a few instances.

use std::time::Duration;

use futures::future::join_all;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::fake_ollama::SimStats;

/// How often in-flight counts are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// One instance's `/sim/stats`, or `None` when it did not answer within a second.
pub async fn snapshot(client: &reqwest::Client, instance: &str) -> Option<SimStats> {
    let response = client
        .get(format!("{instance}/sim/stats"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// Every instance's `/sim/stats`, in order.
pub async fn snapshots(client: &reqwest::Client, instances: &[String]) -> Vec<Option<SimStats>> {
    join_all(instances.iter().map(|i| snapshot(client, i))).await
}

/// In-flight samples taken in the background until [`Sampler::finish`].
pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Vec<Option<usize>>>>,
}

impl Sampler {
    /// Starts sampling `instances` every [`SAMPLE_EVERY`].
    pub fn start(client: reqwest::Client, instances: Vec<String>) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let row = snapshots(&client, &instances).await;
                samples.push(row.into_iter().map(|s| s.map(|s| s.in_flight)).collect());
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops sampling; one row per tick, one column per instance (`None`: no answer).
    pub async fn finish(self) -> Vec<Vec<Option<usize>>> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
