//! What the pool learns per model to decide between waiting for a warm instance and loading
//! the model on a free one: how long a load costs before the first token, and how long a
//! request holds its slot.
//!
//! Both are exponentially weighted moving averages fed by requests as they end. The load
//! estimate starts at `pool.model_load_estimate_ms` and moves toward what cold requests
//! (sent where the model was not loaded) show: the time from taking their slot to the first
//! byte of a streamed reply, i.e. the load plus the prompt's evaluation, which is what
//! going cold costs over a warm instance. The hold time is learned from warm requests only
//! (a cold one's includes its load); until one has ended, nothing is known of it and the pool
//! routes as if the model had no warm instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Models remembered: far more than a pool serves (only models an instance has reach the
/// pool's selection, so clients cannot grow this map); new ones beyond it teach nothing.
/// About 100 bytes per model with its name.
const MAX_MODELS: usize = 1024;

/// Weight of a new load sample: loads of one model on one kind of GPU vary little, but a
/// sample carries its prompt's evaluation too, so one sample moves the estimate only part of
/// the way (three samples cover two thirds of a change).
const LOAD_WEIGHT: f64 = 0.3;

/// Weight of a new hold-time sample: request lengths vary a lot (short chats, long
/// generations), so the average moves slowly.
const HOLD_WEIGHT: f64 = 0.2;

/// What the pool believes of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelTimes {
    /// Time from taking a slot where the model is not loaded to its first token.
    pub load: Duration,
    /// Cold requests that taught `load` (0: it is still the configured value).
    pub loads_seen: u64,
    /// Mean time a warm request holds its slot; `None` until one has ended.
    pub hold: Option<Duration>,
}

/// The per-model estimates, shared by every request of the pool.
#[derive(Debug)]
pub struct Estimates {
    configured: Duration,
    models: Mutex<HashMap<String, ModelTimes>>,
}

impl Estimates {
    pub fn new(configured: Duration) -> Self {
        Self {
            configured,
            models: Mutex::new(HashMap::new()),
        }
    }

    /// What is known of `model` (the configured load estimate when nothing was learned).
    pub fn get(&self, model: &str) -> ModelTimes {
        self.lock()
            .get(model)
            .copied()
            .unwrap_or_else(|| self.seed())
    }

    /// A cold request's time from taking its slot to its first token.
    pub fn learn_load(&self, model: &str, sample: Duration) {
        self.update(model, |t| {
            t.load = ewma(t.load, sample, LOAD_WEIGHT);
            t.loads_seen += 1;
        });
    }

    /// A warm request's time holding its slot.
    pub fn learn_hold(&self, model: &str, sample: Duration) {
        self.update(model, |t| {
            t.hold = Some(t.hold.map_or(sample, |h| ewma(h, sample, HOLD_WEIGHT)));
        });
    }

    fn seed(&self) -> ModelTimes {
        ModelTimes {
            load: self.configured,
            loads_seen: 0,
            hold: None,
        }
    }

    /// Only a model's first sample allocates (its name).
    fn update(&self, model: &str, f: impl FnOnce(&mut ModelTimes)) {
        let seed = self.seed();
        let mut models = self.lock();
        if let Some(t) = models.get_mut(model) {
            f(t);
        } else if models.len() < MAX_MODELS {
            let mut t = seed;
            f(&mut t);
            models.insert(model.to_string(), t);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ModelTimes>> {
        self.models
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn ewma(old: Duration, sample: Duration, weight: f64) -> Duration {
    let v = old.as_secs_f64() * (1.0 - weight) + sample.as_secs_f64() * weight;
    Duration::try_from_secs_f64(v).unwrap_or(old)
}

/// How long until a slot should free where the model is loaded, when every such slot is
/// taken: requests there end on average `hold` after they start and at random moments, so
/// with `busy` of them running one ends about every `hold / busy`, and the waiters already
/// parked for the model (`ahead`) take the first ones. `None` when nothing is known.
pub fn warm_wait(hold: Option<Duration>, busy: usize, ahead: usize) -> Option<Duration> {
    let hold = hold?;
    if busy == 0 {
        return None;
    }
    Some(hold.mul_f64((ahead + 1) as f64 / busy as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = "llama3:8b";

    #[test]
    fn the_configured_value_holds_until_a_cold_request_teaches() {
        let e = Estimates::new(Duration::from_secs(3));
        assert_eq!(e.get(MODEL).load, Duration::from_secs(3));
        assert_eq!(e.get(MODEL).hold, None);
        // A warm request's hold time says nothing of loads.
        e.learn_hold(MODEL, Duration::from_millis(500));
        assert_eq!(e.get(MODEL).load, Duration::from_secs(3));
        assert_eq!(e.get(MODEL).loads_seen, 0);
    }

    #[test]
    fn cold_requests_move_the_load_estimate_toward_what_they_saw() {
        let e = Estimates::new(Duration::from_secs(1));
        e.learn_load(MODEL, Duration::from_secs(5));
        let once = e.get(MODEL).load;
        assert!(
            once > Duration::from_secs(1) && once < Duration::from_secs(5),
            "{once:?}"
        );
        for _ in 0..20 {
            e.learn_load(MODEL, Duration::from_secs(5));
        }
        let t = e.get(MODEL);
        assert!(t.load > Duration::from_millis(4_950), "{t:?}");
        assert_eq!(t.loads_seen, 21);
        // Another model keeps the configured value.
        assert_eq!(e.get("qwen2.5:7b").load, Duration::from_secs(1));
    }

    #[test]
    fn the_hold_time_starts_at_the_first_sample_and_averages() {
        let e = Estimates::new(Duration::from_secs(3));
        e.learn_hold(MODEL, Duration::from_millis(200));
        assert_eq!(e.get(MODEL).hold, Some(Duration::from_millis(200)));
        e.learn_hold(MODEL, Duration::from_millis(1_200));
        let hold = e.get(MODEL).hold.expect("known").as_secs_f64();
        assert!((hold - 0.4).abs() < 1e-6, "{hold}");
    }

    #[test]
    fn the_map_is_bounded() {
        let e = Estimates::new(Duration::from_secs(3));
        for i in 0..MAX_MODELS + 10 {
            e.learn_load(&format!("m{i}"), Duration::from_secs(9));
        }
        assert_eq!(e.lock().len(), MAX_MODELS);
        assert_eq!(e.get("m0").loads_seen, 1);
        let late = format!("m{}", MAX_MODELS + 5);
        assert_eq!(e.get(&late).load, Duration::from_secs(3), "not learned");
    }

    #[test]
    fn a_warm_slot_frees_sooner_with_more_of_them_busy_and_later_behind_others() {
        let hold = Some(Duration::from_millis(800));
        assert_eq!(warm_wait(hold, 4, 0), Some(Duration::from_millis(200)));
        assert_eq!(warm_wait(hold, 4, 3), Some(Duration::from_millis(800)));
        assert_eq!(warm_wait(hold, 1, 0), Some(Duration::from_millis(800)));
        assert_eq!(warm_wait(None, 4, 0), None, "nothing known: no waiting");
        assert_eq!(warm_wait(hold, 0, 0), None);
    }
}
