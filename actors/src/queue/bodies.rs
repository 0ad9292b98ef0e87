//! Message bodies as a delivery batch loads them from the object store: per
//! destination a slice of at most `queue.max_batch_bytes` at a time
//! ([`DestinationBodies`]), never the whole batch, and a body several destinations
//! need read once ([`SharedBodies`]).

use std::collections::HashMap;

use bytes::Bytes;
use tracing::Instrument;

use super::attempt::ClaimedEntry;
use super::context::QueueContext;
use crate::health_state::{Dependency, DependencyFailed};
use crate::storage::bodies::BodyError;

/// A message body as loaded for delivery.
pub(super) enum Body {
    Loaded(Bytes),
    /// No object under the key.
    Missing,
    /// The object store failed.
    Unavailable(String),
}

impl Body {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Body::Loaded(b) => b,
            _ => &[],
        }
    }
}

pub(super) async fn load_body(q: &QueueContext, key: &str) -> Body {
    match q.bodies.get(key).await {
        Ok(b) => Body::Loaded(b),
        Err(BodyError::NotFound(_)) => Body::Missing,
        Err(err) => Body::Unavailable(err.to_string()),
    }
}

/// Bodies a later destination of the batch still needs (a message to several
/// domains), kept up to `queue.max_batch_bytes` so each is read once per attempt.
pub(super) struct SharedBodies {
    bodies: HashMap<usize, Bytes>,
    bytes: u64,
    /// Per entry: destinations not yet done.
    remaining: Vec<u32>,
}

impl SharedBodies {
    pub(super) fn new(remaining: Vec<u32>) -> Self {
        SharedBodies {
            bodies: HashMap::new(),
            bytes: 0,
            remaining,
        }
    }

    /// Keeps a body another destination will need, while there is room.
    fn keep(&mut self, i: usize, body: &Bytes, max: u64) {
        let size = body.len() as u64;
        if self.remaining[i] > 1 && !self.bodies.contains_key(&i) && self.bytes + size <= max {
            self.bytes += size;
            self.bodies.insert(i, body.clone());
        }
    }

    /// A destination is done with entry `i`: drop its body when no other needs it.
    pub(super) fn done(&mut self, i: usize) {
        self.remaining[i] = self.remaining[i].saturating_sub(1);
        if self.remaining[i] == 0
            && let Some(body) = self.bodies.remove(&i)
        {
            self.bytes -= body.len() as u64;
        }
    }
}

/// The bodies of one destination's messages, in delivery order, loaded a slice at a
/// time: a slice is as many messages as fit in `queue.max_batch_bytes` (a larger
/// message alone), and the previous slice is dropped before the next is loaded. Bodies
/// that later destinations need too are kept in [`SharedBodies`] (up to the same size).
/// So a worker holds at most about twice `max_batch_bytes`, however big its batch.
pub(super) struct DestinationBodies<'a> {
    q: &'a QueueContext,
    entries: &'a [ClaimedEntry],
    shared: &'a mut SharedBodies,
    /// Entry indexes in delivery order.
    order: Vec<usize>,
    /// The loaded slice: (position in `order` of its first entry, bodies).
    slice: (usize, Vec<Body>),
}

impl<'a> DestinationBodies<'a> {
    pub(super) fn new(
        q: &'a QueueContext,
        entries: &'a [ClaimedEntry],
        shared: &'a mut SharedBodies,
        order: Vec<usize>,
    ) -> Self {
        DestinationBodies {
            q,
            entries,
            shared,
            order,
            slice: (0, Vec::new()),
        }
    }

    /// The body of the message at `pos` in delivery order; positions are asked for in
    /// increasing order.
    pub(super) async fn get(&mut self, pos: usize) -> &Body {
        let (start, loaded) = &self.slice;
        if !(pos >= *start && pos < start + loaded.len()) {
            self.slice = (pos, Vec::new());
            let max = self.q.config.queue.max_batch_bytes;
            let mut end = pos;
            let mut bytes = 0u64;
            while end < self.order.len() {
                let size = self.entries[self.order[end]].size;
                if end > pos && bytes + size > max {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let (q, entries, shared) = (self.q, self.entries, &*self.shared);
            let loads = self.order[pos..end].iter().map(|&i| async move {
                match shared.bodies.get(&i) {
                    Some(body) => Body::Loaded(body.clone()),
                    None => load_body(q, &entries[i].object_key).await,
                }
            });
            let bodies = futures::future::join_all(loads)
                .instrument(tracing::info_span!(
                    "storage.get_bodies",
                    messages = end - pos,
                    bytes
                ))
                .await;
            if bodies.iter().any(|b| matches!(b, Body::Unavailable(_))) {
                self.q
                    .health_monitor
                    .do_send(DependencyFailed(Dependency::Storage));
            }
            for (&i, body) in self.order[pos..end].iter().zip(&bodies) {
                if let Body::Loaded(b) = body {
                    self.shared.keep(i, b, max);
                }
            }
            self.slice = (pos, bodies);
        }
        &self.slice.1[pos - self.slice.0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bodies_keep_what_a_later_destination_needs_within_the_cap() {
        // Entry 0 goes to three destinations, entry 1 to one, entry 2 to two.
        let mut shared = SharedBodies::new(vec![3, 1, 2]);
        let body = |n: usize| Bytes::from(vec![b'x'; n]);
        shared.keep(0, &body(60), 100);
        shared.keep(1, &body(10), 100);
        shared.keep(2, &body(50), 100);
        assert!(shared.bodies.contains_key(&0));
        assert!(
            !shared.bodies.contains_key(&1),
            "no other destination needs it"
        );
        assert!(!shared.bodies.contains_key(&2), "past the cap");
        assert_eq!(shared.bytes, 60);
        shared.keep(0, &body(60), 100);
        assert_eq!(shared.bytes, 60, "kept once");
        for i in [0, 1, 2] {
            shared.done(i);
        }
        assert!(shared.bodies.contains_key(&0), "still needed once more");
        shared.keep(2, &body(50), 100);
        assert!(
            !shared.bodies.contains_key(&2),
            "its last destination is next"
        );
        shared.done(0);
        shared.done(2);
        assert!(
            shared.bodies.contains_key(&0),
            "one destination of entry 0 left"
        );
        shared.done(0);
        assert!(shared.bodies.is_empty());
        assert_eq!(shared.bytes, 0);
        shared.done(0);
        assert_eq!(shared.remaining[0], 0, "never below zero");
    }
}
