//! Failed key checks per client IP: past `auth.max_failures_per_minute` in a minute, that IP
//! gets 429 for the rest of the minute before any database lookup, so guessing keys is slow
//! and cannot load the database.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Most IPs tracked at once; beyond it the oldest windows are dropped first.
const MAX_TRACKED: usize = 100_000;

pub struct Failures {
    max: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Failures {
    pub fn new(max: u32) -> Self {
        Self {
            max,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn blocked(&self, ip: IpAddr) -> bool {
        let Ok(windows) = self.windows.lock() else {
            return false;
        };
        windows
            .get(&ip)
            .is_some_and(|(start, n)| start.elapsed() < WINDOW && *n >= self.max)
    }

    pub fn record(&self, ip: IpAddr) {
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
        let now = Instant::now();
        let entry = windows.entry(ip).or_insert((now, 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_ip() {
        let f = Failures::new(3);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(!f.blocked(a));
            f.record(a);
        }
        assert!(f.blocked(a));
        assert!(!f.blocked(b));
    }
}
