//! QueueWorker: claims due entries with a lease, delivers them (one connection per
//! destination for the whole batch), sends DSNs for what failed for good, and records
//! every outcome in one transaction. Several workers per node and several nodes share
//! the queue through the claim (see [`store::claim`]).
//!
//! - While the database is down the worker pauses (it does not claim) and resumes by
//!   itself when the HealthMonitor sees it back.
//! - On shutdown it stops claiming, lets the message in flight finish for up to
//!   `server.shutdown.drain_timeout_seconds`, and releases what it had not started.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use chrono::Utc;
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, mpsc, watch};

use super::client::{ClientSettings, Connection, RemoteReply};
use super::dsn::{self, FailedRecipient};
use super::route::{RouteError, Router};
use super::store::{self, ClaimedEntry, ClaimedRecipient, EntryResult, Outcome, RecipientResult};
use crate::accounts::{self, RecipientLookup};
use crate::config::Config;
use crate::health::{Dependency, DependencyFailed, HealthState};
use crate::shutdown::Phase;
use crate::smtp::proto::command::Address;
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
}

pub struct QueueWorker {
    ctx: Arc<QueueContext>,
    index: usize,
    /// Dropped when the worker is done; the ShutdownCoordinator waits for all of them.
    done: Option<mpsc::Sender<()>>,
}

impl QueueWorker {
    pub fn new(ctx: Arc<QueueContext>, index: usize, done: mpsc::Sender<()>) -> Self {
        QueueWorker {
            ctx,
            index,
            done: Some(done),
        }
    }
}

impl Actor for QueueWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (q, index, done) = (self.ctx.clone(), self.index, self.done.take());
        ctx.spawn(
            async move {
                run(q, index).await;
                drop(done);
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }
}

async fn run(q: Arc<QueueContext>, index: usize) {
    let owner = format!("{}#{index}", q.node_id);
    let cfg = &q.config.queue;
    let poll = Duration::from_secs_f64(cfg.poll_interval_seconds);
    let lease = Duration::from_secs_f64(cfg.lease_seconds);
    let mut shutdown = q.shutdown.clone();
    let mut paused = false;
    loop {
        if *shutdown.borrow() != Phase::Running {
            break;
        }
        // Registered before looking, so a commit between the claim and the wait wakes us.
        let wake = q.wakeup.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let database_up = q.health.get(Dependency::Database).up;
        if database_up == paused {
            paused = !database_up;
            if index == 0 {
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
    let work = async {
        let bodies = load_bodies(q, &entries).await;
        let mut results = deliver(q, &entries, &bodies).await;
        expire(&mut results);
        send_bounces(q, &mut results, &bodies).await;
        results
    };
    // Keep the claim alive while a long batch is delivered.
    let renew = async {
        loop {
            tokio::time::sleep(lease / 3).await;
            if let Err(e) = store::renew(&q.db, owner, &ids, lease).await {
                tracing::warn!(component = "queue", error = %e, "lease renewal failed");
            }
        }
    };
    let results = tokio::select! {
        results = work => results,
        _ = renew => unreachable!("the renewal loop never ends"),
    };
    for e in &results {
        log_results(e);
    }
    // Record until it works or the lease is about to run out: while the database is
    // down the outcomes wait here rather than be lost (a lost record means the entry
    // is delivered again after the lease).
    let deadline = tokio::time::Instant::now() + lease.mul_f64(0.9);
    let retry = &q.config.queue.retry;
    let poll = Duration::from_secs_f64(q.config.queue.poll_interval_seconds);
    loop {
        match store::record(&q.db, owner, &q.node_id, &results, retry).await {
            Ok(keys) => {
                let deletes = keys.iter().map(|key| async move {
                    if let Err(e) = q.bodies.delete(key).await {
                        tracing::warn!(component = "queue", key = %key, error = %e, "could not delete the body of a finished message (db check finds it)");
                    }
                });
                futures::future::join_all(deletes).await;
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

async fn load_bodies(q: &QueueContext, entries: &[ClaimedEntry]) -> Vec<Result<Bytes, String>> {
    let loads = entries.iter().map(|e| async move {
        q.bodies
            .get(&e.object_key)
            .await
            .map_err(|err| err.to_string())
    });
    let bodies = futures::future::join_all(loads).await;
    if bodies.iter().any(Result::is_err) {
        q.health_monitor
            .do_send(DependencyFailed(Dependency::Storage));
    }
    bodies
}

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
/// carrying its messages one after another.
async fn deliver(
    q: &QueueContext,
    entries: &[ClaimedEntry],
    bodies: &[Result<Bytes, String>],
) -> Vec<EntryResult> {
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
        if let Err(err) = &bodies[i] {
            let reply = format!("451 4.3.0 message body unavailable: {err}");
            results[i].recipients.extend(e.recipients.iter().map(|r| {
                result_for(
                    r,
                    Outcome::Deferred {
                        reply: reply.clone(),
                    },
                    None,
                )
            }));
            continue;
        }
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
    let drain = Duration::from_secs_f64(q.config.server.shutdown.drain_timeout_seconds as f64);
    let deadline = drain_deadline(q.shutdown.clone(), drain);
    tokio::pin!(deadline);
    for (dest, items) in groups {
        deliver_destination(
            q,
            &dest,
            items,
            entries,
            bodies,
            &mut results,
            deadline.as_mut(),
        )
        .await;
    }
    results
}

async fn deliver_destination(
    q: &QueueContext,
    dest: &str,
    items: Vec<(usize, Vec<&ClaimedRecipient>)>,
    entries: &[ClaimedEntry],
    bodies: &[Result<Bytes, String>],
    results: &mut [EntryResult],
    mut deadline: std::pin::Pin<&mut impl Future<Output = ()>>,
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
    let max_per_connection = q.config.delivery.max_messages_per_connection;
    let mut conn: Option<Connection> = None;
    let mut sent = 0usize;
    let mut unreachable: Option<String> = None;
    for (i, rcpts) in items {
        let released = |results: &mut [EntryResult]| {
            results[i]
                .recipients
                .extend(rcpts.iter().map(|r| result_for(r, Outcome::Released, None)));
        };
        if *q.shutdown.borrow() != Phase::Running {
            released(results);
            continue;
        }
        if let Some(reply) = &unreachable {
            results[i].recipients.extend(rcpts.iter().map(|r| {
                result_for(
                    r,
                    Outcome::Deferred {
                        reply: reply.clone(),
                    },
                    None,
                )
            }));
            continue;
        }
        if sent >= max_per_connection
            && let Some(c) = conn.take()
        {
            c.quit().await;
        }
        if conn.is_none() {
            match Connection::open(&hops, &q.client).await {
                Ok(c) => {
                    conn = Some(c);
                    sent = 0;
                }
                Err(e) => {
                    let reply = format!("451 4.4.1 cannot deliver to {dest}: {e}");
                    results[i].recipients.extend(rcpts.iter().map(|r| {
                        result_for(
                            r,
                            Outcome::Deferred {
                                reply: reply.clone(),
                            },
                            None,
                        )
                    }));
                    unreachable = Some(reply);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let host = c.host.clone();
        let addrs: Vec<&str> = rcpts.iter().map(|r| r.address.as_str()).collect();
        let body = bodies[i].as_ref().map(|b| b.as_ref()).unwrap_or_default();
        let sent_result = tokio::select! {
            r = c.send(&entries[i].envelope_from, &addrs, body) => Some(r),
            _ = deadline.as_mut() => None,
        };
        sent += 1;
        match sent_result {
            Some(Ok(result)) => {
                for (r, reply) in rcpts.iter().zip(&result.recipients) {
                    results[i]
                        .recipients
                        .push(result_for(r, outcome_of(reply), Some(&host)));
                }
            }
            Some(Err(e)) => {
                let reply = format!("451 4.4.2 connection to {host} lost: {e}");
                results[i].recipients.extend(rcpts.iter().map(|r| {
                    result_for(
                        r,
                        Outcome::Deferred {
                            reply: reply.clone(),
                        },
                        Some(&host),
                    )
                }));
                conn = None;
            }
            None => {
                tracing::warn!(component = "queue", id = %entries[i].id, "drain timeout: delivery abandoned, entry released");
                released(results);
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
async fn send_bounces(
    q: &QueueContext,
    results: &mut [EntryResult],
    bodies: &[Result<Bytes, String>],
) {
    for (i, e) in results.iter_mut().enumerate() {
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
        let original = bodies[i].as_ref().map(|b| b.as_ref()).unwrap_or_default();
        if let Err(err) = bounce(q, &e.entry, &failed, original).await {
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
    match q.storage.send(StoreMessage(message)).await {
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
        let host = r.remote_host.as_deref().unwrap_or("-");
        if event == "delivered" {
            tracing::info!(component = "queue", event, id = %e.entry.id, rcpt = %r.recipient.address, host, reply = %reply, attempt = e.entry.attempts + 1, "delivery result");
        } else {
            tracing::warn!(component = "queue", event, id = %e.entry.id, rcpt = %r.recipient.address, host, reply = %reply, attempt = e.entry.attempts + 1, "delivery result");
        }
    }
}
