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
//!
//! Cache-aware hand-over: when the pool is saturated every request waits here, and giving a
//! freed slot to whoever is first would overwrite that slot's prompt cache with a stranger's
//! prompt, so that turn and the next one of the slot's own conversation are both evaluated in
//! full; or make the instance unload a model its other slots are using, to load the first
//! waiter's. So a freed slot goes instead to a waiter whose prompt prefix that instance holds,
//! or, when the fair choice would have to load its model there, to a waiter whose model is
//! loaded, if one's ticket is within `window` of the fair choice's
//! (`pool.affinity_queue_window`: how many requests of a weight-1 org it may jump), no waiter
//! it would jump has been jumped `window` times already, and none of them is parked for a
//! warm slot. Fairness bends by a bounded amount and nobody starves. A waiter whose model
//! is not loaded on the freed slot's instance but is loaded on another that can take it is
//! not held up by a jump there (its own warm slot comes from elsewhere): it is not counted as
//! jumped, blocks no jump, and any warm waiter, however far back, goes before loading its
//! model (a load, and the unloading of a model the instance's other slots use, for a wait
//! the head hardly saves).

use std::collections::HashMap;
use std::sync::Arc;

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
    /// The instance holding its prompt's prefix, if known (cache-aware hand-over).
    pub owner: Option<usize>,
    /// How often a waiter with a later ticket was handed a slot ahead of it.
    passed: u32,
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
    /// How far (in tickets) and how often a waiter may be jumped for a cache hit or a warm
    /// slot; 0: never.
    window: u32,
}

/// What a waiting request needs from an instance.
pub struct Want<'a> {
    pub org: &'a str,
    pub weight: u64,
    pub model: Option<String>,
    pub exclude: Vec<usize>,
    /// Park it for a warm slot (see [`Waiter::warm_only`]).
    pub warm_only: bool,
    /// The instance holding its prompt's prefix (see [`Waiter::owner`]).
    pub owner: Option<usize>,
}

impl FairQueue {
    /// A queue that may hand a freed slot to a better waiter for the instance (its prefix
    /// there, or its model loaded there) within `window` tickets of the fair choice (0:
    /// strictly by ticket).
    pub fn with_window(window: u32) -> FairQueue {
        FairQueue {
            window,
            ..FairQueue::default()
        }
    }

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
            owner: want.owner,
            passed: 0,
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

    /// The waiter with the smallest ticket that `instance` can serve, or a better one for it
    /// within the window (see the module's doc).
    pub fn pick_for(&mut self, instance: &Instance, pool: &[Arc<Instance>]) -> Option<Waiter> {
        let at = Freed { instance, pool };
        let (chosen, fair) = self.choose(at)?;
        Some(self.take(chosen, fair, at))
    }

    /// The fair choice for the freed slot and the waiter to give it to (see
    /// [`Self::better_for`]), as indices.
    fn choose(&self, at: Freed<'_>) -> Option<(usize, usize)> {
        let fair = self
            .waiters
            .iter()
            .enumerate()
            .filter(|(_, w)| can_serve(at.instance, w))
            .min_by(|(_, a), (_, b)| a.ticket.total_cmp(&b.ticket))
            .map(|(i, _)| i)?;
        Some((self.better_for(at, fair).unwrap_or(fair), fair))
    }

    /// Takes the chosen waiter out, counting the waiters it jumped.
    fn take(&mut self, chosen: usize, fair: usize, at: Freed<'_>) -> Waiter {
        let fair_ticket = self.waiters[fair].ticket;
        let w = self.waiters.swap_remove(chosen);
        if chosen != fair {
            for jumped in self.waiters.iter_mut() {
                if jumped.ticket < w.ticket && at.would_delay(jumped) {
                    jumped.passed += 1;
                }
            }
        }
        self.parked -= usize::from(w.warm_only);
        // Virtual time follows the fair choice, so an idle org's next ticket is not pushed
        // back by a jump.
        self.vtime = self.vtime.max(fair_ticket);
        if self.waiters.is_empty() {
            // Idle: forget history so the next busy period starts even.
            self.org_finish.clear();
        }
        w
    }

    /// A waiter that may go ahead of the fair choice `fair` on the freed slot: the earliest
    /// whose prefix the instance holds (its model loaded), or, when the fair choice would
    /// have to load its model there, the earliest whose model is loaded; within `window`
    /// tickets of the fair choice (any distance for a warm waiter when the fair choice's
    /// model is loaded on another instance that can take it); and none of the waiters it
    /// would jump blocks it (see [`Self::blocks`]).
    fn better_for(&self, at: Freed<'_>, fair: usize) -> Option<usize> {
        let reach = f64::from(self.window);
        let head = &self.waiters[fair];
        let head_warm = at.warm(head);
        if self.window == 0 || (at.here(head) && head_warm) {
            return None;
        }
        // Loading the head's model here while it is loaded elsewhere would cost a load for a
        // wait the head hardly saves: any warm waiter goes first.
        let warm_reach = if !head_warm && at.warm_elsewhere(head) {
            f64::INFINITY
        } else {
            reach
        };
        let (i, hit) = self
            .waiters
            .iter()
            .enumerate()
            .filter(|(_, w)| can_serve(at.instance, w) && at.warm(w))
            .filter(|(_, w)| {
                let behind = w.ticket - head.ticket;
                (at.here(w) && behind <= reach) || (!head_warm && behind <= warm_reach)
            })
            // Cache hits first, then the earliest.
            .min_by(|(_, a), (_, b)| {
                (!at.here(a))
                    .cmp(&!at.here(b))
                    .then(a.ticket.total_cmp(&b.ticket))
            })?;
        if i == fair {
            return None;
        }
        let blocked = self
            .waiters
            .iter()
            .any(|w| w.ticket < hit.ticket && self.blocks(w, at));
        (!blocked).then_some(i)
    }

    /// Whether jumping `w` on the freed slot is refused: it was jumped `window` times
    /// already, or it is parked for a warm slot (it waits against a deadline, past which it
    /// loads its model elsewhere, and a load costs far more than a cache hit saves). A
    /// waiter that would have to load its model here while another instance that can take
    /// it has it loaded is never held up by a jump here.
    fn blocks(&self, w: &Waiter, at: Freed<'_>) -> bool {
        // The cheap test first: `would_delay` may look at every instance.
        (w.passed >= self.window || w.warm_only) && at.would_delay(w)
    }
}

/// A freed slot: its instance, and the pool's instances (which others have a waiter's model
/// loaded).
#[derive(Clone, Copy)]
struct Freed<'a> {
    instance: &'a Instance,
    pool: &'a [Arc<Instance>],
}

impl Freed<'_> {
    /// The instance holds `w`'s prompt prefix.
    fn here(&self, w: &Waiter) -> bool {
        w.owner == Some(self.instance.index)
    }

    /// `w`'s model is loaded here.
    fn warm(&self, w: &Waiter) -> bool {
        w.model
            .as_deref()
            .is_none_or(|m| self.instance.has_loaded(m))
    }

    /// Another healthy instance that `w` may go to has its model loaded.
    fn warm_elsewhere(&self, w: &Waiter) -> bool {
        let Some(m) = w.model.as_deref() else {
            return false;
        };
        self.pool.iter().any(|i| {
            i.index != self.instance.index
                && i.is_healthy()
                && !w.exclude.contains(&i.index)
                && i.has_loaded(m)
        })
    }

    /// Giving this slot to another delays `w`: it could take it, and would not rather wait
    /// for a warm slot elsewhere than load its model here.
    fn would_delay(&self, w: &Waiter) -> bool {
        can_serve(self.instance, w) && (self.warm(w) || !self.warm_elsewhere(w))
    }
}

/// Whether `instance` can take waiter `w`: not already tried for it, has its model, and is
/// warm for it when it is parked.
fn can_serve(instance: &Instance, w: &Waiter) -> bool {
    !w.exclude.contains(&instance.index)
        && w.model.as_deref().is_none_or(|m| instance.has_model(m))
        && (!w.warm_only || w.model.as_deref().is_some_and(|m| instance.has_loaded(m)))
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
            owner: None,
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
            .filter_map(|_| q.pick_for(&inst, &[]))
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
            .filter_map(|_| q.pick_for(&inst, &[]))
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
                available: ["m:latest".to_string(), "n:latest".to_string()].into(),
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
        assert!(
            q.pick_for(&cold, &[]).is_none(),
            "a cold instance will not do"
        );
        // A newcomer that may take any instance is not parked: it is served first by the cold one.
        let (tx, _rx2) = oneshot::channel();
        let any = q.enqueue(want("b", 1, Some("m:latest"), false), tx);
        assert!(!q.only_parked());
        assert_eq!(q.pick_for(&cold, &[]).map(|w| w.id), Some(any));
        assert_eq!(q.pick_for(&warm, &[]).map(|w| w.id), Some(parked));
        assert!(q.is_empty() && q.only_parked());

        // Unparked, it takes what frees.
        let (tx, _rx3) = oneshot::channel();
        let id = q.enqueue(want("a", 1, Some("m:latest"), true), tx);
        assert!(q.contains(id));
        q.unpark(id);
        assert!(!q.only_parked());
        assert_eq!(q.pick_for(&cold, &[]).map(|w| w.id), Some(id));
        assert!(!q.contains(id));
    }

    /// Enqueues one waiter per entry (`org`, owner) with model `m:latest`; returns their ids.
    fn fill(q: &mut FairQueue, entries: &[(&str, Option<usize>)]) -> Vec<u64> {
        entries
            .iter()
            .map(|(org, owner)| {
                let (tx, rx) = oneshot::channel();
                std::mem::forget(rx);
                let mut w = want(org, 1, Some("m:latest"), false);
                w.owner = *owner;
                q.enqueue(w, tx)
            })
            .collect()
    }

    #[test]
    fn a_freed_slot_goes_to_a_waiter_whose_prefix_it_holds_within_the_window() {
        let (zero, one) = (instance(0, &["m:latest"]), instance(1, &["m:latest"]));
        let mut q = FairQueue::with_window(3);
        let ids = fill(
            &mut q,
            &[("a", Some(0)), ("a", None), ("a", Some(1)), ("a", Some(1))],
        );
        assert_eq!(
            q.pick_for(&one, &[]).map(|w| w.id),
            Some(ids[2]),
            "jumps two"
        );
        assert_eq!(
            q.pick_for(&zero, &[]).map(|w| w.id),
            Some(ids[0]),
            "its own"
        );
        assert_eq!(q.pick_for(&one, &[]).map(|w| w.id), Some(ids[3]));
        assert_eq!(q.pick_for(&zero, &[]).map(|w| w.id), Some(ids[1]));

        // Beyond the window: fair order.
        let ids = fill(
            &mut q,
            &[
                ("a", None),
                ("a", None),
                ("a", None),
                ("a", None),
                ("a", Some(1)),
            ],
        );
        assert_eq!(q.pick_for(&one, &[]).map(|w| w.id), Some(ids[0]));
        // An owner that no longer has the model loaded holds no cache for it.
        let cold_one = instance(1, &[]);
        assert_eq!(q.pick_for(&cold_one, &[]).map(|w| w.id), Some(ids[1]));

        // Window 0: strictly by ticket.
        let mut strict = FairQueue::with_window(0);
        let ids = fill(&mut strict, &[("a", None), ("a", Some(1))]);
        assert_eq!(strict.pick_for(&one, &[]).map(|w| w.id), Some(ids[0]));
    }

    #[test]
    fn a_waiter_is_jumped_at_most_window_times() {
        let one = instance(1, &["m:latest"]);
        let mut q = FairQueue::with_window(2);
        let head = fill(&mut q, &[("a", None)])[0];
        let mut served = Vec::new();
        for n in 0..4 {
            // A steady stream of the instance's own conversations from orgs that were idle,
            // each ticketed within the window.
            fill(&mut q, &[(&format!("b{n}"), Some(1))]);
            served.push(q.pick_for(&one, &[]).map(|w| w.id));
        }
        // b0 ties the head's ticket (both orgs were idle): taking it jumps no one; b1 and b2
        // jump the head, b3 may not.
        let at = served.iter().position(|id| *id == Some(head));
        assert_eq!(at, Some(3), "jumped twice, then served: {served:?}");
    }

    #[test]
    fn a_waiter_parked_for_a_warm_slot_is_never_jumped() {
        let one = instance(1, &["m:latest"]);
        let mut q = FairQueue::with_window(8);
        let (tx, _rx) = oneshot::channel();
        let parked = q.enqueue(want("a", 1, Some("m:latest"), true), tx);
        fill(&mut q, &[("a", Some(1))]);
        assert_eq!(q.pick_for(&one, &[]).map(|w| w.id), Some(parked));
    }

    #[test]
    fn a_waiter_that_would_load_its_model_lets_a_warm_one_go_first() {
        let one = instance(1, &["m:latest"]);
        let mut q = FairQueue::with_window(8);
        let (tx, _rx) = oneshot::channel();
        let cold = q.enqueue(want("a", 1, Some("n:latest"), false), tx);
        let warm = fill(&mut q, &[("a", None), ("a", None)]);
        assert_eq!(
            q.pick_for(&one, &[]).map(|w| w.id),
            Some(warm[0]),
            "n would load"
        );
        assert_eq!(q.pick_for(&one, &[]).map(|w| w.id), Some(warm[1]));
        assert_eq!(
            q.pick_for(&one, &[]).map(|w| w.id),
            Some(cold),
            "nothing warm left"
        );
        // Nothing warm within the window: the head loads its model.
        let (tx, _rx) = oneshot::channel();
        let cold = q.enqueue(want("a", 1, Some("n:latest"), false), tx);
        let rest = fill(&mut q, &[("a", None); 9]);
        for w in q.waiters.iter_mut().filter(|w| rest[..8].contains(&w.id)) {
            w.model = Some("n:latest".into());
        }
        assert_eq!(q.pick_for(&one, &[]).map(|w| w.id), Some(cold));
    }

    #[test]
    fn a_jump_does_not_push_back_an_idle_orgs_next_ticket() {
        let one = instance(1, &["m:latest"]);
        let mut q = FairQueue::with_window(8);
        let mut entries = vec![("flood", None); 6];
        entries.push(("flood", Some(1)));
        fill(&mut q, &entries);
        q.pick_for(&one, &[]);
        let quiet = fill(&mut q, &[("quiet", None)])[0];
        let next: Vec<u64> = (0..2)
            .filter_map(|_| q.pick_for(&one, &[]))
            .map(|w| w.id)
            .collect();
        assert!(
            next.contains(&quiet),
            "the quiet org's ticket follows the fair choice, not the jump: {next:?}"
        );
    }

    #[test]
    fn a_waiter_warm_elsewhere_is_passed_over_rather_than_loaded_here() {
        let one = Arc::new(instance(1, &["m:latest"]));
        let two = Arc::new(instance(2, &["n:latest"]));
        two.healthy
            .store(true, std::sync::atomic::Ordering::Release);
        let pool = [Arc::clone(&one), Arc::clone(&two)];
        let queue = || {
            let mut q = FairQueue::with_window(2);
            let (tx, rx) = oneshot::channel();
            std::mem::forget(rx);
            let cold = q.enqueue(want("a", 1, Some("n:latest"), false), tx);
            let warm = fill(&mut q, &[("a", None); 5]);
            (q, cold, warm)
        };
        // n is loaded on `two`: every slot `one` frees goes to an m waiter, however far back,
        // and the n waiter is never counted as jumped (it would block after two jumps).
        let (mut q, cold, warm) = queue();
        for id in &warm {
            assert_eq!(q.pick_for(&one, &pool).map(|w| w.id), Some(*id));
        }
        assert_eq!(q.pick_for(&two, &pool).map(|w| w.id), Some(cold));

        // Loaded nowhere else: within the window, then the head loads its model here.
        let (mut q, cold, warm) = queue();
        let alone = [Arc::clone(&one)];
        let served: Vec<_> = (0..3)
            .filter_map(|_| q.pick_for(&one, &alone).map(|w| w.id))
            .collect();
        assert_eq!(served, vec![warm[0], warm[1], cold]);
    }
}
