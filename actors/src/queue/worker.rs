//! QueueWorker: the loop that claims due entries with a lease, has them delivered (one
//! connection per destination for the whole batch, [`super::deliver`]), sends DSNs for
//! what failed for good ([`super::bounce`]), and records every outcome in one
//! transaction. Several workers per node and several nodes share the queue through the
//! claim (see [`store::claim`]).
//!
//! - While the database is down the worker pauses (it does not claim) and resumes by
//!   itself when the HealthMonitor sees it back.
//! - On shutdown it stops claiming, lets the message in flight finish for up to
//!   `server.shutdown.drain_timeout_seconds`, and releases what it had not started.
//! - A worker is a plain task ([`run`]) that the Supervisor restarts when it panics or
//!   returns while the node runs; what it had claimed is claimed again after its lease.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::Instrument;

use super::attempt::{self, ClaimedEntry, EntryResult};
use super::bounce::{expire, send_bounces};
use super::context::QueueContext;
use super::deliver::deliver;
use super::store;
use crate::health_state::{Dependency, DependencyFailed};
use crate::shutdown::Phase;

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

/// One log event per attempted recipient (named by its outcome), and the deliveries
/// metric.
fn log_results(e: &EntryResult) {
    for r in &e.recipients {
        let (Some(event), Some(reply)) = (r.outcome.history_name(), r.outcome.reply()) else {
            continue;
        };
        crate::metrics::metrics()
            .queue_deliveries
            .with_label_values(&[event])
            .inc();
        let host = r.remote_host.as_deref().unwrap_or("-");
        if event == attempt::DELIVERED {
            tracing::info!(component = "queue", event, id = %e.entry.id, rcpt = %r.recipient.address, host, reply = %reply, attempt = e.entry.attempts + 1, "delivery result");
        } else {
            tracing::warn!(component = "queue", event, id = %e.entry.id, rcpt = %r.recipient.address, host, reply = %reply, attempt = e.entry.attempts + 1, "delivery result");
        }
    }
}
