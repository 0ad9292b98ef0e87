//! Janitor: periodic housekeeping that no request waits for, run by every node.
//! - Audit-log entries older than `audit.retention_days` are pruned (SPEC O5), at start
//!   and then hourly; the delete is idempotent, so nodes need not agree on who does it.
//! - Soft-deleted messages older than `retention.deleted_messages_days` are purged
//!   (SPEC M7, [`crate::retention`]), at start and then every
//!   `retention.purge_interval_seconds`. The database hands each entry to one node, so
//!   each node audits only its own share: one `retention.purge` entry per run that
//!   deleted anything, with counts, never one per message.
//! - Send counters of past hours (`limits::sending`) are removed hourly.
//! - DKIM keys whose record no longer needs publishing (rotated out, past their grace
//!   period) are removed, hourly with the audit pruning; idempotent as well.
//!
//! The Janitor takes no message: it is a plain task the Supervisor restarts if it
//! panics ([`Janitor::run`]), ending when the shutdown begins.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use crate::audit::{AuditLog, Entry};
use crate::config::RetentionConfig;
use crate::retention::{self, PurgeReport};
use crate::shutdown::Phase;
use crate::storage::BodyStore;

const INTERVAL: Duration = Duration::from_secs(3600);

pub struct Janitor {
    db: DatabaseConnection,
    audit: Arc<AuditLog>,
    retention_days: u32,
    /// None when `retention.deleted_messages_days` is 0 (deleted messages are kept).
    purge: Option<Purge>,
}

/// What the purge of deleted messages needs.
pub struct Purge {
    pub db: DatabaseConnection,
    pub bodies: BodyStore,
    pub config: RetentionConfig,
}

impl Purge {
    /// The purge for `config`, or None when it keeps deleted messages for ever.
    pub fn new(
        db: DatabaseConnection,
        bodies: BodyStore,
        config: &RetentionConfig,
    ) -> Option<Purge> {
        (config.deleted_messages_days > 0).then(|| Purge {
            db,
            bodies,
            config: config.clone(),
        })
    }
}

impl Janitor {
    pub fn new(
        db: DatabaseConnection,
        audit: Arc<AuditLog>,
        retention_days: u32,
        purge: Option<Purge>,
    ) -> Self {
        Janitor {
            db,
            audit,
            retention_days,
            purge,
        }
    }

    /// Prunes and purges at start and then on their intervals, until the shutdown
    /// begins. One run at a time: a run through a large backlog that outlasts its
    /// interval delays the next tick rather than starting another run beside it.
    pub async fn run(&self, mut shutdown: watch::Receiver<Phase>) {
        // Supervision tests: the Janitor panics here.
        crate::failpoint::failpoint!("janitor_run");
        let every = |period| {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        };
        let mut prune = every(INTERVAL);
        let mut purge = self
            .purge
            .as_ref()
            .map(|p| every(p.config.purge_interval()));
        let work = async {
            loop {
                tokio::select! {
                    _ = prune.tick() => {
                        self.prune().await;
                        self.expire_dkim_keys().await;
                        self.purge_send_counters().await;
                    }
                    _ = tick(&mut purge) => {
                        if let Some(purge) = &self.purge {
                            self.purge(purge).await;
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = work => {}
            _ = shutdown.wait_for(|p| *p != Phase::Running) => {}
        }
    }

    async fn prune(&self) {
        let days = self.retention_days;
        match self.audit.prune(days).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    component = "supervisor",
                    event = "audit_pruned",
                    removed = n,
                    retention_days = days,
                    "old audit entries pruned"
                )
            }
            Err(e) => {
                tracing::warn!(component = "supervisor", event = "audit_prune_failed", error = %e, "audit pruning failed; next try in an hour")
            }
        }
    }

    /// Removes the DKIM keys past `publish_until`, with one audit entry per run that
    /// removed any.
    async fn expire_dkim_keys(&self) {
        match crate::dkim::store::purge_expired(&self.db, chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    component = "supervisor",
                    event = "dkim_keys_expired",
                    removed = n,
                    "DKIM keys past their publication period removed"
                );
                self.audit
                    .record(Entry::success("dkim.expire", "janitor").detail("removed", n))
                    .await;
            }
            Err(e) => {
                tracing::warn!(component = "supervisor", event = "dkim_expire_failed", error = %e, "removing expired DKIM keys failed; next try in an hour")
            }
        }
    }

    /// Removes send counters of windows before the last hour.
    async fn purge_send_counters(&self) {
        if let Err(e) = crate::limits::sending::purge_counters(&self.db, chrono::Utc::now()).await {
            tracing::warn!(component = "supervisor", event = "send_counters_purge_failed", error = %e, "removing old send counters failed; next try in an hour")
        }
    }

    async fn purge(&self, purge: &Purge) {
        let (days, batch) = (
            purge.config.deleted_messages_days,
            purge.config.purge_batch_size,
        );
        let cutoff = retention::cutoff(chrono::Utc::now(), days);
        let report = retention::purge(&purge.db, &purge.bodies, cutoff, batch).await;
        crate::metrics::metrics()
            .retention_purged(report.entries, report.messages + report.unreferenced);
        log(&report, days);
        if report.purged_any() {
            self.audit.record(audit_entry(&report, days)).await;
        }
    }
}

/// The next tick of `interval`, or never without one.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn log(report: &PurgeReport, days: u32) {
    if report.purged_any() {
        tracing::info!(
            component = "storage",
            event = "retention_purged",
            entries = report.entries,
            messages = report.messages,
            unreferenced = report.unreferenced,
            bytes = report.bytes,
            objects_deleted = report.objects_deleted,
            objects_failed = report.objects_failed,
            retention_days = days,
            "deleted messages past retention purged"
        );
    }
    if let Some(error) = &report.error {
        tracing::warn!(component = "storage", event = "retention_purge_failed", error = %error, "purging deleted messages failed; the next run takes up the rest");
    }
}

/// The run's one audit entry: a failure when the database stopped it half-way.
fn audit_entry(report: &PurgeReport, days: u32) -> Entry {
    let entry = match &report.error {
        None => Entry::success("retention.purge", "janitor"),
        Some(error) => Entry::failure("retention.purge", "janitor").detail("error", error.as_str()),
    };
    entry
        .detail("entries", report.entries)
        .detail("messages", report.messages)
        .detail("unreferenced", report.unreferenced)
        .detail("bytes", report.bytes)
        .detail("objects_deleted", report.objects_deleted)
        .detail("objects_failed", report.objects_failed)
        .detail("retention_days", days)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zero_days_runs_no_purge() {
        let dir = tempfile::tempdir().unwrap();
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        let bodies = BodyStore::open(&crate::config::StorageConfig {
            backend: crate::config::StorageBackend::Fs,
            fs: Some(crate::config::FsStorageConfig {
                path: dir.path().to_path_buf(),
                fsync: false,
            }),
            s3: None,
            limit_bytes: 0,
        })
        .unwrap();
        let config = |days| RetentionConfig {
            deleted_messages_days: days,
            ..RetentionConfig::default()
        };
        assert!(Purge::new(db.clone(), bodies.clone(), &config(0)).is_none());
        let purge = Purge::new(db, bodies, &config(1)).expect("a purge");
        assert_eq!(purge.config.deleted_messages_days, 1);
    }

    #[test]
    fn the_audit_entry_carries_the_counts_and_a_failure_its_error() {
        let report = PurgeReport {
            entries: 5,
            messages: 3,
            unreferenced: 1,
            bytes: 1200,
            objects_deleted: 3,
            objects_failed: 0,
            error: None,
        };
        let entry = audit_entry(&report, 30);
        assert_eq!(entry.event, "retention.purge");
        assert_eq!(entry.outcome.as_str(), "success");
        assert_eq!(entry.actor, "janitor");
        assert_eq!(entry.details["entries"], 5);
        assert_eq!(entry.details["messages"], 3);
        assert_eq!(entry.details["unreferenced"], 1);
        assert_eq!(entry.details["bytes"], 1200);
        assert_eq!(entry.details["objects_deleted"], 3);
        assert_eq!(entry.details["retention_days"], 30);
        let failed = audit_entry(
            &PurgeReport {
                error: Some("connection closed".into()),
                ..report
            },
            30,
        );
        assert_eq!(failed.outcome.as_str(), "failure");
        assert_eq!(failed.details["error"], "connection closed");
        assert_eq!(
            failed.details["entries"], 5,
            "what was done before it failed"
        );
    }
}
