//! QueueWorker: claims due entries with a lease, delivers them (one connection per
//! destination for the whole batch), sends DSNs for what failed for good, and records
//! every outcome in one transaction. Bodies are loaded per destination, a slice of at
//! most `queue.max_batch_bytes` at a time ([`DestinationBodies`]), never the whole batch;
//! a body several destinations need is read once ([`SharedBodies`]). Several workers per node and several nodes share
//! the queue through the claim (see [`store::claim`]).
//!
//! - While the database is down the worker pauses (it does not claim) and resumes by
//!   itself when the HealthMonitor sees it back.
//! - On shutdown it stops claiming, lets the message in flight finish for up to
//!   `server.shutdown.drain_timeout_seconds`, and releases what it had not started.
//! - A worker is a plain task ([`run`]) that the Supervisor restarts when it panics or
//!   returns while the node runs; what it had claimed is claimed again after its lease.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::Instrument;

use actix::prelude::*;
use bytes::Bytes;
use chrono::Utc;
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, watch};

use super::client::{ClientSettings, Connection, RemoteReply};
use super::dsn::{self, FailedRecipient};
use super::route::{RouteError, Router};
use super::store::{self, ClaimedEntry, ClaimedRecipient, EntryResult, Outcome, RecipientResult};
use crate::accounts::{self, RecipientLookup};
use crate::config::Config;
use crate::health::{Dependency, DependencyFailed, HealthState};
use crate::shutdown::Phase;
use crate::smtp::proto::command::Address;
use crate::storage::bodies::BodyError;
use crate::storage::{BodyStore, IncomingMessage, StorageActor, StoreMessage};

/// What every worker of a node shares.
pub struct QueueContext {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub bodies: BodyStore,
    pub storage: Addr<StorageActor>,
    pub health: Arc<HealthState>,
    pub health_monitor: Recipient<DependencyFailed>,
    pub node_id: String,
    pub router: Router,
    pub client: ClientSettings,
    /// Notified by the StorageActor when it committed new queue entries.
    pub wakeup: Arc<Notify>,
    pub shutdown: watch::Receiver<Phase>,
    /// Delivery paused because the database is down (shared so that the change is
    /// logged once, by whichever worker sees it first).
    pub paused: AtomicBool,
}

/// One QueueWorker: claims, delivers and records until the shutdown, then returns. A
/// plain task on the queue arbiter, run and restarted by the Supervisor
/// (`supervisor::child`); `index` tells the workers of a node apart in their lease owner.
pub async fn run(q: Arc<QueueContext>, index: usize) {
    let owner = format!("{}#{index}", q.node_id);
    let cfg = &q.config.queue;
    let poll = Duration::from_secs_f64(cfg.poll_interval_seconds);
    let lease = Duration::from_secs_f64(cfg.lease_seconds);
    let mut shutdown = q.shutdown.clone();
    loop {
        if *shutdown.borrow() != Phase::Running {
            break;
        }
        crate::failpoint::failpoint!("queue_worker_loop");
        // Registered before looking, so a commit between the claim and the wait wakes us.
        let wake = q.wakeup.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let paused = !q.health.get(Dependency::Database).up;
        // Whichever worker sees the change first tells, once per change.
        if q.paused.swap(paused, Ordering::AcqRel) != paused {
            if paused {
                tracing::warn!(
                    component = "queue",
                    event = "queue_paused",
                    "database down: delivery paused"
                );
            } else {
                tracing::info!(
                    component = "queue",
                    event = "queue_resumed",
                    "database back: delivery resumed"
                );
            }
        }
        let idle = if paused {
            true
        } else {
            match store::claim(&q.db, &owner, cfg.batch_size, lease).await {
                Ok(entries) if entries.is_empty() => true,
                Ok(entries) => {
                    process(&q, &owner, entries).await;
                    false
                }
                Err(e) => {
                    tracing::warn!(component = "queue", error = %e, "claim failed");
                    q.health_monitor
                        .do_send(DependencyFailed(Dependency::Database));
                    true
                }
            }
        };
        if idle {
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// One claimed batch, from bodies to recorded outcomes.
async fn process(q: &QueueContext, owner: &str, entries: Vec<ClaimedEntry>) {
    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    let lease = Duration::from_secs_f64(q.config.queue.lease_seconds);
    // One trace per claimed batch (SPEC O2): bodies, deliveries, bounces, records.
    let work = async {
        let mut results = deliver(q, &entries).await;
        expire(&mut results);
        send_bounces(q, &mut results).await;
        for e in &results {
            log_results(e);
        }
        record(q, owner, &results)
            .instrument(tracing::info_span!("db.record_results"))
            .await;
    }
    .instrument(tracing::info_span!(parent: None, "queue.delivery", otel.kind = "client", entries = entries.len()));
    // Keep the claim alive while a long batch is delivered and recorded.
    let renew = async {
        loop {
            tokio::time::sleep(lease / 3).await;
            match store::renew(&q.db, owner, &ids, lease).await {
                Ok(held) if held < ids.len() => {
                    tracing::warn!(
                        component = "queue",
                        held,
                        claimed = ids.len(),
                        "lost the lease of some entries; their outcome will not be recorded by this node"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(component = "queue", error = %e, "lease renewal failed"),
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = renew => unreachable!("the renewal loop never ends"),
    }
}

/// Records the outcomes, retrying while the database is down: the outcomes wait here
/// rather than be lost (a lost record means the entry is delivered again after its
/// lease). The lease is renewed meanwhile; after `lease_seconds` it gives up.
async fn record(q: &QueueContext, owner: &str, results: &[EntryResult]) {
    let lease = Duration::from_secs_f64(q.config.queue.lease_seconds);
    let deadline = tokio::time::Instant::now() + lease;
    let retry = &q.config.queue.retry;
    let poll = Duration::from_secs_f64(q.config.queue.poll_interval_seconds);
    loop {
        match store::record(&q.db, owner, &q.node_id, results, retry).await {
            Ok(keys) => {
                q.bodies.delete_unreferenced(&keys).await;
                return;
            }
            Err(e) => {
                tracing::warn!(component = "queue", error = %e, "recording delivery results failed; retrying");
                q.health_monitor
                    .do_send(DependencyFailed(Dependency::Database));
                if tokio::time::Instant::now() + poll > deadline {
                    tracing::error!(
                        component = "queue",
                        entries = results.len(),
                        "delivery results not recorded; the entries will be tried again after their lease"
                    );
                    return;
                }
                tokio::time::sleep(poll).await;
            }
        }
    }
}

/// A message body as loaded for delivery.
enum Body {
    Loaded(Bytes),
    /// No object under the key.
    Missing,
    /// The object store failed.
    Unavailable(String),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Loaded(b) => b,
            _ => &[],
        }
    }
}

async fn load_body(q: &QueueContext, key: &str) -> Body {
    match q.bodies.get(key).await {
        Ok(b) => Body::Loaded(b),
        Err(BodyError::NotFound(_)) => Body::Missing,
        Err(err) => Body::Unavailable(err.to_string()),
    }
}

/// Bodies a later destination of the batch still needs (a message to several
/// domains), kept up to `queue.max_batch_bytes` so each is read once per attempt.
struct SharedBodies {
    bodies: HashMap<usize, Bytes>,
    bytes: u64,
    /// Per entry: destinations not yet done.
    remaining: Vec<u32>,
}

impl SharedBodies {
    fn new(remaining: Vec<u32>) -> Self {
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
    fn done(&mut self, i: usize) {
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
struct DestinationBodies<'a> {
    q: &'a QueueContext,
    entries: &'a [ClaimedEntry],
    shared: &'a mut SharedBodies,
    /// Entry indexes in delivery order.
    order: Vec<usize>,
    /// The loaded slice: (position in `order` of its first entry, bodies).
    slice: (usize, Vec<Body>),
}

impl<'a> DestinationBodies<'a> {
    fn new(
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
    async fn get(&mut self, pos: usize) -> &Body {
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

/// How long a missing body may just be late: on SQLite a message's row can commit
/// before its object is flushed (storage::actor, Parallel mode).
const YOUNG: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

fn result_for(r: &ClaimedRecipient, outcome: Outcome, host: Option<&str>) -> RecipientResult {
    RecipientResult {
        recipient: r.clone(),
        outcome,
        remote_host: host.map(str::to_string),
    }
}

fn outcome_of(reply: &RemoteReply) -> Outcome {
    let text = reply.to_string();
    if reply.is_positive() {
        Outcome::Delivered { reply: text }
    } else if reply.is_permanent() {
        Outcome::Failed {
            reply: text,
            expired: false,
        }
    } else {
        Outcome::Deferred { reply: text }
    }
}

/// Resolves when shutdown began and the drain time is over.
async fn drain_deadline(mut shutdown: watch::Receiver<Phase>, timeout: Duration) {
    let _ = shutdown.wait_for(|p| *p != Phase::Running).await;
    tokio::time::sleep(timeout).await;
}

/// Delivers a batch: recipients grouped by destination, one connection per destination
/// carrying its messages one after another. Once shutdown began and the drain time is
/// over, whatever is still going is abandoned and its recipients released.
async fn deliver(q: &QueueContext, entries: &[ClaimedEntry]) -> Vec<EntryResult> {
    let mut results: Vec<EntryResult> = entries
        .iter()
        .map(|e| EntryResult {
            entry: e.clone(),
            recipients: Vec::with_capacity(e.recipients.len()),
        })
        .collect();
    // destination -> [(entry index, its recipients there)]
    let mut groups: BTreeMap<String, Vec<(usize, Vec<&ClaimedRecipient>)>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let mut by_dest: BTreeMap<String, Vec<&ClaimedRecipient>> = BTreeMap::new();
        for r in &e.recipients {
            by_dest
                .entry(q.router.destination(&r.domain))
                .or_default()
                .push(r);
        }
        for (dest, rcpts) in by_dest {
            groups.entry(dest).or_default().push((i, rcpts));
        }
    }
    let mut remaining = vec![0u32; entries.len()];
    for items in groups.values() {
        for (i, _) in items {
            remaining[*i] += 1;
        }
    }
    let mut shared = SharedBodies::new(remaining);
    let drain = Duration::from_secs(q.config.server.shutdown.drain_timeout_seconds);
    let deadline = drain_deadline(q.shutdown.clone(), drain);
    tokio::pin!(deadline);
    for (dest, items) in groups {
        let done: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
        let abandoned = tokio::select! {
            _ = deliver_destination(q, &dest, items, entries, &mut shared, &mut results)
                .instrument(tracing::info_span!("delivery.destination", destination = %dest)) => false,
            _ = deadline.as_mut() => true,
        };
        if abandoned {
            tracing::warn!(component = "queue", event = "drain_abandoned", destination = %dest, "drain timeout: deliveries abandoned, entries released");
            break;
        }
        for i in done {
            shared.done(i);
        }
    }
    // Recipients without a result were not (or not completely) tried: released.
    for (e, r) in entries.iter().zip(results.iter_mut()) {
        for rcpt in &e.recipients {
            if !r.recipients.iter().any(|x| x.recipient.id == rcpt.id) {
                r.recipients.push(result_for(rcpt, Outcome::Released, None));
            }
        }
    }
    results
}

/// What to do with recipients whose body is not there: `None` when it is loaded.
fn without_body(body: &Body, entry: &ClaimedEntry) -> Option<Outcome> {
    let why = match body {
        Body::Loaded(_) => return None,
        // Not flushed yet (SQLite, Parallel mode): try again shortly, not an attempt.
        Body::Missing if Utc::now() - entry.created_at < YOUNG => return Some(Outcome::Released),
        Body::Missing => "message body missing from the object store".to_string(),
        Body::Unavailable(err) => format!("message body unavailable: {err}"),
    };
    Some(Outcome::Deferred {
        reply: format!("451 4.3.0 {why}"),
    })
}

async fn deliver_destination(
    q: &QueueContext,
    dest: &str,
    items: Vec<(usize, Vec<&ClaimedRecipient>)>,
    entries: &[ClaimedEntry],
    shared: &mut SharedBodies,
    results: &mut [EntryResult],
) {
    let hops = match q.router.hops(dest).await {
        Ok(hops) => hops,
        Err(e) => {
            let outcome = match e {
                RouteError::Permanent(m) => Outcome::Failed {
                    reply: format!("550 {m}"),
                    expired: false,
                },
                RouteError::Temporary(m) => Outcome::Deferred {
                    reply: format!("451 {m}"),
                },
            };
            for (i, rcpts) in items {
                results[i]
                    .recipients
                    .extend(rcpts.iter().map(|r| result_for(r, outcome.clone(), None)));
            }
            return;
        }
    };
    let mut bodies =
        DestinationBodies::new(q, entries, shared, items.iter().map(|(i, _)| *i).collect());
    let max_per_connection = q.config.delivery.max_messages_per_connection;
    let mut conn: Option<Connection> = None;
    let mut sent = 0usize;
    let mut unreachable: Option<String> = None;
    for (pos, (i, rcpts)) in items.into_iter().enumerate() {
        // Shutdown: start nothing new (what is left gets released).
        if *q.shutdown.borrow() != Phase::Running {
            break;
        }
        let defer_all = |results: &mut [EntryResult], reply: &str, host: Option<&str>| {
            results[i].recipients.extend(rcpts.iter().map(|r| {
                result_for(
                    r,
                    Outcome::Deferred {
                        reply: reply.to_string(),
                    },
                    host,
                )
            }));
        };
        if let Some(reply) = &unreachable {
            defer_all(results, reply, None);
            continue;
        }
        let body = bodies.get(pos).await;
        if let Some(outcome) = without_body(body, &entries[i]) {
            results[i]
                .recipients
                .extend(rcpts.iter().map(|r| result_for(r, outcome.clone(), None)));
            continue;
        }
        if sent >= max_per_connection
            && let Some(c) = conn.take()
        {
            c.quit().await;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(&hops, &q.client).await {
                Ok(c) => {
                    sent = 0;
                    conn.insert(c)
                }
                Err(e) => {
                    let reply = format!("451 4.4.1 cannot deliver to {dest}: {e}");
                    defer_all(results, &reply, None);
                    unreachable = Some(reply);
                    continue;
                }
            },
        };
        let host = c.host.clone();
        let addrs: Vec<&str> = rcpts.iter().map(|r| r.address.as_str()).collect();
        sent += 1;
        match c
            .send(&entries[i].envelope_from, &addrs, body.bytes())
            .await
        {
            Ok(result) => {
                let closing = result.recipients.iter().any(RemoteReply::closes_connection);
                for (r, reply) in rcpts.iter().zip(&result.recipients) {
                    results[i]
                        .recipients
                        .push(result_for(r, outcome_of(reply), Some(&host)));
                }
                if closing {
                    conn = None;
                }
            }
            Err(e) => {
                let reply = format!("451 4.4.2 connection to {host} lost: {e}");
                defer_all(results, &reply, Some(&host));
                conn = None;
            }
        }
    }
    if let Some(c) = conn {
        c.quit().await;
    }
}

/// Deferred recipients of entries past `queue.max_age` are given up.
fn expire(results: &mut [EntryResult]) {
    let now = Utc::now();
    for e in results.iter_mut().filter(|e| now >= e.entry.expires_at) {
        for r in &mut e.recipients {
            if let Outcome::Deferred { reply } = &r.outcome {
                r.outcome = Outcome::Failed {
                    reply: reply.clone(),
                    expired: true,
                };
            }
        }
    }
}

/// One DSN per entry for the recipients that failed in this attempt, to the envelope
/// sender; none for the null sender. A DSN that cannot be stored turns its failures
/// back into deferrals, so the bounce is retried rather than lost.
async fn send_bounces(q: &QueueContext, results: &mut [EntryResult]) {
    for e in results.iter_mut() {
        let failed: Vec<FailedRecipient> = e
            .recipients
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed { reply, expired } => Some(FailedRecipient {
                    address: r.recipient.address.clone(),
                    status: if *expired {
                        "4.4.7".into()
                    } else {
                        RemoteReply::parse(reply).status()
                    },
                    diagnostic: reply.clone(),
                    remote_mta: r.remote_host.clone(),
                    expired: *expired,
                }),
                _ => None,
            })
            .collect();
        if failed.is_empty() {
            continue;
        }
        if e.entry.envelope_from.is_empty() {
            tracing::info!(component = "queue", event = "bounce_suppressed", id = %e.entry.id, "not bouncing a message from the null sender");
            continue;
        }
        // One body at a time; a DSN without the original is still sent.
        let original = load_body(q, &e.entry.object_key).await;
        if let Err(err) = bounce(q, &e.entry, &failed, original.bytes()).await {
            tracing::warn!(component = "queue", id = %e.entry.id, error = %err, "DSN not stored; failure will be retried");
            for r in &mut e.recipients {
                if let Outcome::Failed { reply, .. } = &r.outcome {
                    r.outcome = Outcome::Deferred {
                        reply: reply.clone(),
                    };
                }
            }
        }
    }
}

async fn bounce(
    q: &QueueContext,
    entry: &ClaimedEntry,
    failed: &[FailedRecipient],
    original: &[u8],
) -> Result<(), String> {
    let Some(sender) = Address::parse(&entry.envelope_from) else {
        tracing::warn!(component = "queue", id = %entry.id, sender = %entry.envelope_from, "cannot bounce to an unparsable sender");
        return Ok(());
    };
    let (local, outbound) = match accounts::lookup_recipient(&q.db, &sender)
        .await
        .map_err(|e| e.to_string())?
    {
        RecipientLookup::Local(l) => (vec![l], vec![]),
        RecipientLookup::Remote => (vec![], vec![sender]),
        RecipientLookup::UnknownUser => {
            tracing::warn!(component = "queue", id = %entry.id, sender = %entry.envelope_from, "bounce for a local sender that no longer exists dropped");
            return Ok(());
        }
    };
    let raw = dsn::build(&dsn::Bounce {
        reporting_mta: &q.config.server.hostname,
        original_sender: &entry.envelope_from,
        queue_id: &entry.id,
        arrival: entry.created_at,
        failed,
        original,
    });
    let id = uuid::Uuid::now_v7().to_string();
    let message = IncomingMessage::new(
        id.clone(),
        raw,
        String::new(),
        local,
        "queue",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        outbound,
    );
    match q.storage.send(StoreMessage::new(message)).await {
        Ok(Ok(())) => {
            tracing::info!(component = "queue", event = "dsn_sent", id = %entry.id, dsn_id = %id, to = %entry.envelope_from, recipients = failed.len(), "delivery status notification sent");
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn log_results(e: &EntryResult) {
    for r in &e.recipients {
        let (event, reply) = match &r.outcome {
            Outcome::Delivered { reply } => ("delivered", reply),
            Outcome::Deferred { reply } => ("deferred", reply),
            Outcome::Failed {
                reply,
                expired: false,
            } => ("bounced", reply),
            Outcome::Failed {
                reply,
                expired: true,
            } => ("expired", reply),
            Outcome::Released => continue,
        };
        crate::metrics::metrics()
            .queue_deliveries
            .with_label_values(&[event])
            .inc();
        let host = r.remote_host.as_deref().unwrap_or("-");
        if event == "delivered" {
            tracing::info!(component = "queue", event, id = %e.entry.id, rcpt = %r.recipient.address, host, reply = %reply, attempt = e.entry.attempts + 1, "delivery result");
        } else {
            tracing::warn!(component = "queue", event, id = %e.entry.id, rcpt = %r.recipient.address, host, reply = %reply, attempt = e.entry.attempts + 1, "delivery result");
        }
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
