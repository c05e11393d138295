//! Fair sharing of a saturated pool: requests waiting for a slot are admitted across orgs by
//! weight, not first come first served, so one org flooding the pool cannot starve the others.
//!
//! Start-time fair queuing: each org's waiter gets a ticket one `1/weight` step after the
//! org's previous ticket (or after the current virtual time, if the org was idle). A freed
//! slot goes to the waiting request with the smallest ticket that the instance can serve. A
//! flooding org's tickets run far ahead; a quiet org's next request is served almost at once.
//!
//! A waiter may be parked for a warm slot (see `select.rs`): it takes only an instance that
//! has its model loaded, until its wait for one runs out and it is unparked. Parking changes
//! which instances a waiter accepts, never its ticket.

use std::collections::HashMap;

use tokio::sync::oneshot;

use super::instance::{Instance, SlotGuard};

/// A request waiting for a slot.
pub struct Waiter {
    pub id: u64,
    pub ticket: f64,
    pub model: Option<String>,
    pub exclude: Vec<usize>,
    /// Parked: only an instance with `model` loaded will do.
    pub warm_only: bool,
    pub tx: oneshot::Sender<SlotGuard>,
}

#[derive(Default)]
pub struct FairQueue {
    waiters: Vec<Waiter>,
    /// Each org's last ticket.
    org_finish: HashMap<String, f64>,
    /// The ticket of the last request admitted.
    vtime: f64,
    next_id: u64,
    /// Waiters parked for a warm slot.
    parked: usize,
}

/// What a waiting request needs from an instance.
pub struct Want<'a> {
    pub org: &'a str,
    pub weight: u64,
    pub model: Option<String>,
    pub exclude: Vec<usize>,
    /// Park it for a warm slot (see [`Waiter::warm_only`]).
    pub warm_only: bool,
}

impl FairQueue {
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Every waiter (if any) is parked for a warm slot: a free slot now is one none of them
    /// can take (a warm one would have been handed over as it freed), so a newcomer taking it
    /// jumps no one.
    pub fn only_parked(&self) -> bool {
        self.parked == self.waiters.len()
    }

    /// Waiters parked for a warm slot of `model`: they take the next ones that free.
    pub fn parked_for(&self, model: &str) -> usize {
        if self.parked == 0 {
            return 0;
        }
        self.waiters
            .iter()
            .filter(|w| w.warm_only && w.model.as_deref() == Some(model))
            .count()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.waiters.iter().any(|w| w.id == id)
    }

    /// A parked waiter's wait for a warm slot ran out: any instance will do now.
    pub fn unpark(&mut self, id: u64) {
        if let Some(w) = self.waiters.iter_mut().find(|w| w.id == id && w.warm_only) {
            w.warm_only = false;
            self.parked -= 1;
        }
    }

    pub fn enqueue(&mut self, want: Want<'_>, tx: oneshot::Sender<SlotGuard>) -> u64 {
        let start = self
            .org_finish
            .get(want.org)
            .copied()
            .unwrap_or(0.0)
            .max(self.vtime);
        let ticket = start + 1.0 / want.weight.max(1) as f64;
        self.org_finish.insert(want.org.to_string(), ticket);
        self.next_id += 1;
        let id = self.next_id;
        self.parked += usize::from(want.warm_only);
        self.waiters.push(Waiter {
            id,
            ticket,
            model: want.model,
            exclude: want.exclude,
            warm_only: want.warm_only,
            tx,
        });
        id
    }

    /// Takes a waiter out (it gave up); `false` when it was already handed a slot.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.waiters.iter().position(|w| w.id == id) {
            Some(i) => {
                let w = self.waiters.swap_remove(i);
                self.parked -= usize::from(w.warm_only);
                true
            }
            None => false,
        }
    }

    /// The waiter with the smallest ticket that `instance` can serve.
    pub fn pick_for(&mut self, instance: &Instance) -> Option<Waiter> {
        let best = self
            .waiters
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.exclude.contains(&instance.index))
            .filter(|(_, w)| w.model.as_deref().is_none_or(|m| instance.has_model(m)))
            .filter(|(_, w)| {
                !w.warm_only || w.model.as_deref().is_some_and(|m| instance.has_loaded(m))
            })
            .min_by(|(_, a), (_, b)| a.ticket.total_cmp(&b.ticket))
            .map(|(i, _)| i)?;
        let w = self.waiters.swap_remove(best);
        self.parked -= usize::from(w.warm_only);
        self.vtime = self.vtime.max(w.ticket);
        if self.waiters.is_empty() {
            // Idle: forget history so the next busy period starts even.
            self.org_finish.clear();
        }
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want<'a>(org: &'a str, weight: u64, model: Option<&str>, warm_only: bool) -> Want<'a> {
        Want {
            org,
            weight,
            model: model.map(str::to_string),
            exclude: vec![],
            warm_only,
        }
    }

    #[test]
    fn a_quiet_org_overtakes_a_flood() {
        let mut q = FairQueue::default();
        let mut rxs = Vec::new();
        for _ in 0..50 {
            let (tx, rx) = oneshot::channel();
            q.enqueue(want("flood", 1, None, false), tx);
            rxs.push(rx);
        }
        let (tx, _rx) = oneshot::channel();
        let quiet = q.enqueue(want("quiet", 1, None, false), tx);
        let inst = Instance::new(
            0,
            crate::config::UpstreamUrl {
                base: "http://x:1".into(),
                authority: "x:1".into(),
                host: "x".into(),
                port: 1,
            },
        );
        let order: Vec<u64> = (0..3)
            .filter_map(|_| q.pick_for(&inst))
            .map(|w| w.id)
            .collect();
        assert!(
            order[..2].contains(&quiet),
            "the quiet org is served among the first two: {order:?}"
        );
    }

    #[test]
    fn weights_share_in_proportion() {
        let mut q = FairQueue::default();
        let mut keep = Vec::new();
        let mut who = HashMap::new();
        for _ in 0..40 {
            for (org, weight) in [("heavy", 3), ("light", 1)] {
                let (tx, rx) = oneshot::channel();
                let id = q.enqueue(want(org, weight, None, false), tx);
                who.insert(id, org);
                keep.push(rx);
            }
        }
        let inst = Instance::new(
            0,
            crate::config::UpstreamUrl {
                base: "http://x:1".into(),
                authority: "x:1".into(),
                host: "x".into(),
                port: 1,
            },
        );
        let first: Vec<&str> = (0..20)
            .filter_map(|_| q.pick_for(&inst))
            .map(|w| who[&w.id])
            .collect();
        let heavy = first.iter().filter(|o| **o == "heavy").count();
        assert_eq!(heavy, 15, "3:1 weights: {first:?}");
    }

    fn instance(index: usize, loaded: &[&str]) -> Instance {
        let inst = Instance::new(
            index,
            crate::config::UpstreamUrl {
                base: format!("http://x:{index}"),
                authority: format!("x:{index}"),
                host: "x".into(),
                port: index as u16,
            },
        );
        inst.models
            .store(std::sync::Arc::new(super::super::instance::ModelSets {
                available: ["m:latest".to_string()].into(),
                loaded: loaded.iter().map(|m| m.to_string()).collect(),
                ..Default::default()
            }));
        inst
    }

    #[test]
    fn a_parked_waiter_takes_only_a_warm_slot_until_unparked() {
        let mut q = FairQueue::default();
        let (tx, _rx) = oneshot::channel();
        let parked = q.enqueue(want("a", 1, Some("m:latest"), true), tx);
        assert!(q.only_parked());
        assert_eq!(q.parked_for("m:latest"), 1);
        assert_eq!(q.parked_for("other:latest"), 0);
        let (cold, warm) = (instance(0, &[]), instance(1, &["m:latest"]));
        assert!(q.pick_for(&cold).is_none(), "a cold instance will not do");
        // A newcomer that may take any instance is not parked: it is served first by the cold one.
        let (tx, _rx2) = oneshot::channel();
        let any = q.enqueue(want("b", 1, Some("m:latest"), false), tx);
        assert!(!q.only_parked());
        assert_eq!(q.pick_for(&cold).map(|w| w.id), Some(any));
        assert_eq!(q.pick_for(&warm).map(|w| w.id), Some(parked));
        assert!(q.is_empty() && q.only_parked());

        // Unparked, it takes what frees.
        let (tx, _rx3) = oneshot::channel();
        let id = q.enqueue(want("a", 1, Some("m:latest"), true), tx);
        assert!(q.contains(id));
        q.unpark(id);
        assert!(!q.only_parked());
        assert_eq!(q.pick_for(&cold).map(|w| w.id), Some(id));
        assert!(!q.contains(id));
    }
}
