//! Admissions of one org sent together (group commit). A request whose org has no admission
//! call in flight has its own sent at once, alone: nothing waits when traffic is light. While a
//! call is in flight, the org's next requests queue, and all of them go in the next call,
//! which the admission script decides one after the other, exactly as separate calls would.
//! Under load one call then carries many requests, so Redis and the gateway pay once per call
//! what they paid once per request (the call itself, the clock, the reads, each key's write).
//! Each call holds one org's keys only: one hash slot on a Redis Cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::Value;
use tokio::sync::oneshot;

use super::msgpack::Pack;
use super::{QuotaSettle, Settlement, Shared};

/// The most requests decided by one call.
const MAX_BATCH: usize = 64;

/// A request's admission, as the script reads it (keys with the prefix).
pub struct Ask {
    /// The hash tag its keys share: requests with the same one go in the same call.
    pub tag: String,
    pub member: String,
    /// TAT key, interval ms, tolerance ms, cost, charge (1) or admit (0).
    pub checks: Vec<(String, f64, f64, f64, u8)>,
    /// Lease key, its sweep mark, max.
    pub streams: Vec<(String, String, u64)>,
    pub quota: Option<QuotaAsk>,
    /// The prompt's block keys, shallow to deep.
    pub blocks: Vec<String>,
}

pub struct QuotaAsk {
    pub org: String,
    pub period: String,
    /// Used counter, holds, holds' total (see `quota_keys`).
    pub keys: [String; 3],
    /// The holds' sweep mark.
    pub mark: String,
    pub hard: u64,
    pub prompt: u64,
    /// -1 when the client gave none.
    pub want: i64,
    pub default_cap: u64,
    pub ttl_ms: u64,
    /// The hold's name (the request id).
    pub hold: String,
}

/// The script's answer for one request: `{status, index, used, grant, cap, depth, owner,
/// decisions...}`.
pub type Reply = Result<Vec<Value>, String>;

struct Entry {
    ask: Ask,
    tx: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Tag {
    waiting: Vec<Entry>,
    /// A call for this tag is in flight; the waiting go in the next one.
    busy: bool,
}

#[derive(Default)]
pub struct Batcher(Mutex<HashMap<String, Tag>>);

/// The hash tag of a Redis key, as Redis Cluster reads it (the whole key without one).
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

impl Shared {
    /// Decides `ask` in the next call for its tag; sends that call at once when none is in
    /// flight.
    pub(super) async fn submit(self: &Arc<Self>, ask: Ask) -> Reply {
        let tag = ask.tag.clone();
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut tags = self.batches.0.lock().unwrap_or_else(|p| p.into_inner());
            let t = tags.entry(tag.clone()).or_default();
            t.waiting.push(Entry { ask, tx });
            !std::mem::replace(&mut t.busy, true)
        };
        if lead {
            // The first call (this request, and whoever queued since) is sent from here:
            // a task would cost a wake-up of another thread on every quiet request. Those
            // that queue during it are sent by a task, and so is the queue if this request
            // goes away mid-call (the guard), so nobody waits for a call that never comes.
            let mut handoff = Handoff {
                shared: self,
                tag: &tag,
                armed: true,
            };
            let more = self.send_next(&tag).await;
            handoff.armed = more;
        }
        rx.await
            .unwrap_or_else(|_| Err("the admission call was dropped".to_string()))
    }

    /// Sends the tag's waiting requests in one call and answers them; whether more are
    /// waiting now (if not, the tag is no longer busy).
    async fn send_next(self: &Arc<Self>, tag: &str) -> bool {
        let batch: Vec<Entry> = {
            let mut tags = self.batches.0.lock().unwrap_or_else(|p| p.into_inner());
            let t = tags.entry(tag.to_string()).or_default();
            let n = t.waiting.len().min(MAX_BATCH);
            t.waiting.drain(..n).collect()
        };
        let asks: Vec<&Ask> = batch.iter().map(|e| &e.ask).collect();
        match self.admit_batch(&asks).await {
            Ok(replies) => {
                for (e, reply) in batch.into_iter().zip(replies) {
                    if let Err(Ok(reply)) = e.tx.send(Ok(reply)) {
                        self.release_orphan(e.ask, &reply);
                    }
                }
            }
            Err(error) => {
                // Redis failed: whoever waits for the next call is answered now too (it
                // would most likely fail the same way, after as long a wait).
                let queued: Vec<Entry> = {
                    let mut tags = self.batches.0.lock().unwrap_or_else(|p| p.into_inner());
                    tags.get_mut(tag)
                        .map(|t| std::mem::take(&mut t.waiting))
                        .unwrap_or_default()
                };
                for e in batch.into_iter().chain(queued) {
                    let _ = e.tx.send(Err(error.clone()));
                }
            }
        }
        let mut tags = self.batches.0.lock().unwrap_or_else(|p| p.into_inner());
        match tags.get(tag) {
            Some(t) if !t.waiting.is_empty() => true,
            _ => {
                tags.remove(tag);
                false
            }
        }
    }

    /// A request admitted after it stopped waiting (its client went away): its lease and
    /// hold are freed at once rather than left to expire.
    fn release_orphan(self: &Arc<Self>, ask: Ask, reply: &[Value]) {
        let int = |i: usize| match reply.get(i) {
            Some(Value::Int(n)) => *n,
            _ => 0,
        };
        if int(0) != 1 {
            return;
        }
        let grant = int(3).max(0) as u64;
        let keys: Vec<String> = ask.streams.into_iter().map(|(k, ..)| k).collect();
        let org = ask
            .quota
            .as_ref()
            .map(|q| q.org.clone())
            .unwrap_or_default();
        let s = Settlement {
            org,
            charges: Vec::new(),
            lease: (!keys.is_empty()).then(|| self.leases.hold(ask.member.clone(), keys)),
            quota: ask.quota.filter(|_| grant > 0).map(|q| QuotaSettle {
                org: q.org,
                period: q.period,
                hold: q.hold,
                grant,
                actual: 0,
            }),
            blocks: None,
        };
        // Nothing to fall back on: what is not freed here expires by itself.
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let _ = shared.settle(&[&s]).await;
        });
    }

    /// Builds and sends one admission call for `asks` (one tag); the replies in order.
    async fn admit_batch(&self, asks: &[&Ask]) -> Result<Vec<Vec<Value>>, String> {
        // Plain keys (read with one MGET) first, then the sorted sets; each once.
        let mut plain = Keys::default();
        let mut sets = Keys::default();
        for a in asks {
            for (k, ..) in &a.checks {
                plain.index(k);
            }
            for (_, mark, _) in &a.streams {
                plain.index(mark);
            }
            if let Some(q) = &a.quota {
                plain.index(&q.keys[0]);
                plain.index(&q.keys[2]);
                plain.index(&q.mark);
            }
            for k in &a.blocks {
                plain.index(k);
            }
        }
        for a in asks {
            for (k, ..) in &a.streams {
                sets.index(k);
            }
            if let Some(q) = &a.quota {
                sets.index(&q.keys[1]);
            }
        }
        let np = plain.names.len();
        // KEYS are 1-based in the script; indices fit an integer of any width.
        let p = |k: &str| (plain.at[k] + 1) as u64;
        let s = |k: &str| (np + sets.at[k] + 1) as u64;
        let mut inv = self.admit.prepare_invoke();
        for k in plain.names.iter().chain(&sets.names) {
            inv.key(*k);
        }
        let mut args = Pack::new();
        args.uint(asks.len() as u64)
            .uint(np as u64)
            .uint(self.lease.as_millis() as u64)
            .uint(super::script::HOLD_TTL_MS);
        let n = |n: usize| n as u64;
        for a in asks {
            args.str(&a.member)
                .uint(n(a.checks.len()))
                .uint(n(a.streams.len()))
                .uint(u64::from(a.quota.is_some()))
                .uint(n(a.blocks.len()));
            for (k, interval, tolerance, cost, charge) in &a.checks {
                args.uint(p(k))
                    .float(*interval)
                    .float(*tolerance)
                    .float(*cost)
                    .uint(u64::from(*charge));
            }
            for (k, mark, max) in &a.streams {
                args.uint(s(k)).uint(p(mark)).uint(*max);
            }
            if let Some(q) = &a.quota {
                args.uint(p(&q.keys[0]))
                    .uint(p(&q.keys[2]))
                    .uint(s(&q.keys[1]))
                    .uint(p(&q.mark))
                    .uint(q.hard)
                    .uint(q.prompt)
                    .int(q.want)
                    .uint(q.default_cap)
                    .uint(q.ttl_ms)
                    .str(&q.hold);
            }
            for k in &a.blocks {
                args.uint(p(k));
            }
        }
        inv.arg(args.finish());
        let flat: Vec<Value> = self.call(inv).await?;
        // Each request's reply is its length, then itself.
        let mut replies = Vec::with_capacity(asks.len());
        let mut rest = flat.into_iter();
        for _ in asks {
            let len = match rest.next() {
                Some(Value::Int(n)) if n >= 0 => n as usize,
                _ => return Err("the admission script's reply is malformed".to_string()),
            };
            replies.push(rest.by_ref().take(len).collect());
        }
        Ok(replies)
    }
}

/// Hands the tag's queue to a task when dropped armed: after a leader's call when more
/// wait, or when the leader went away mid-call.
struct Handoff<'a> {
    shared: &'a Arc<Shared>,
    tag: &'a str,
    armed: bool,
}

impl Drop for Handoff<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (shared, tag) = (Arc::clone(self.shared), self.tag.to_string());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { while shared.send_next(&tag).await {} });
            }
            // No runtime left (the process is stopping): let the queue go.
            Err(_) => {
                let mut tags = shared.batches.0.lock().unwrap_or_else(|p| p.into_inner());
                tags.remove(&tag);
            }
        }
    }
}

/// Keys numbered in order of first use.
#[derive(Default)]
struct Keys<'a> {
    names: Vec<&'a str>,
    at: HashMap<&'a str, usize>,
}

impl<'a> Keys<'a> {
    fn index(&mut self, key: &'a str) {
        if !self.at.contains_key(key) {
            self.at.insert(key, self.names.len());
            self.names.push(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hash_tag;

    #[test]
    fn requests_are_grouped_by_the_hash_tag_redis_cluster_reads() {
        assert_eq!(hash_tag("p:{acme}:rl:org"), "acme");
        assert_eq!(hash_tag("p:{acme}:quota:2026-12:holds:swept"), "acme");
        assert_eq!(hash_tag("{ip:10.0.0.1}:rl"), "ip:10.0.0.1");
        // Redis uses the whole key when the first braces are empty or unclosed.
        assert_eq!(hash_tag("p:{}:{acme}"), "p:{}:{acme}");
        assert_eq!(hash_tag("p:{acme"), "p:{acme");
    }
}
