//! What a hostile upstream knows, counts and remembers, shared by every connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::in_flight::InFlightCounter;

use super::behaviour::Behaviour;
use super::http1;

/// How many recent requests [`Shared::requests_log`] keeps.
const LOG_LIMIT: usize = 4096;

/// One request as the upstream received it, to check what the gateway forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    /// The request target as sent, query string included.
    pub path: String,
    /// In arrival order, names in their original case, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The body after removing any chunked framing.
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        http1::header(&self.headers, name)
    }

    /// Every value of a header, for checking that a duplicate was dropped or merged.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON; `Value::Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The path without its query string.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// State shared by the accept loop, every connection and the test's handle.
#[derive(Debug)]
pub(crate) struct Shared {
    behaviour: Mutex<Behaviour>,
    models: Mutex<Vec<String>>,
    model_requests: AtomicUsize,
    pub(crate) in_flight: Arc<InFlightCounter>,
    log: Mutex<VecDeque<ReceivedRequest>>,
    /// Health probes answer 500 too (a truly sick instance).
    probes_failing: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn new(behaviour: Behaviour, models: Vec<String>) -> Self {
        Self {
            behaviour: Mutex::new(behaviour),
            models: Mutex::new(models),
            model_requests: AtomicUsize::new(0),
            in_flight: Arc::default(),
            log: Mutex::new(VecDeque::new()),
            probes_failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn set_probes_failing(&self, yes: bool) {
        self.probes_failing.store(yes, Ordering::Relaxed);
    }

    pub fn probes_failing(&self) -> bool {
        self.probes_failing.load(Ordering::Relaxed)
    }

    pub fn behaviour(&self) -> Behaviour {
        lock(&self.behaviour).clone()
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.behaviour) = behaviour;
    }

    pub fn models(&self) -> Vec<String> {
        lock(&self.models).clone()
    }

    pub fn set_models(&self, models: Vec<String>) {
        *lock(&self.models) = models;
    }

    pub fn count_model_request(&self) {
        self.model_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn model_requests(&self) -> usize {
        self.model_requests.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.current()
    }

    pub fn max_in_flight(&self) -> usize {
        self.in_flight.max()
    }

    pub fn record(&self, request: ReceivedRequest) {
        let mut log = lock(&self.log);
        if log.len() == LOG_LIMIT {
            log.pop_front();
        }
        log.push_back(request);
    }

    pub fn requests_log(&self) -> Vec<ReceivedRequest> {
        lock(&self.log).iter().cloned().collect()
    }
}

/// A panicking test thread must not poison the upstream for the other tests' asserts.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
