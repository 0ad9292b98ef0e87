//! What the HealthMonitor's probes found, shared without locks: SMTP sessions read
//! [`HealthState`] to answer 451 while a dependency is down (tempfail mode),
//! `/health/ready` reports it, and the StorageActor, QueueWorkers and sessions report a
//! failed call with [`DependencyFailed`] so the monitor probes at once.
//!
//! The probing itself is in [`crate::health`]; this module names nothing of the
//! storage, the database or the queue, so all of them can report here.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use actix::prelude::*;
use serde::Serialize;

use crate::metrics::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    Database,
    Storage,
}

/// The latest probe results, shared without locks by every session and HTTP worker.
#[derive(Debug)]
pub struct HealthState {
    database_up: AtomicBool,
    storage_up: AtomicBool,
    database_latency_ms: AtomicU64,
    storage_latency_ms: AtomicU64,
    /// Outbound queue entries, counted at each database probe (all nodes' queue).
    queue_length: AtomicU64,
    /// Age of the oldest queue entry in seconds; -1 when the queue is empty.
    queue_oldest_seconds: AtomicI64,
    /// Bytes of stored message bodies, summed at each database probe.
    storage_bytes: AtomicU64,
    /// `storage.limit_bytes`; 0 for none.
    storage_limit_bytes: AtomicU64,
    /// Children of the actor tree that spent their restart budget and stay down
    /// (supervisor): the node is unhealthy while any is listed.
    failed_children: Mutex<Vec<String>>,
    /// The StorageActor spent its restart budget: nothing can be stored on this node
    /// until it restarts, so no new mail is taken.
    store_lost: AtomicBool,
    /// The graceful shutdown has begun: `/health/ready` answers 503 from then on, so
    /// load balancers stop sending connections before the listeners close.
    leaving: AtomicBool,
    /// Why the database schema no longer suits this binary (a breaking migration of a
    /// newer release was applied while it runs); None while it does.
    schema_problem: Mutex<Option<String>>,
    schema_ok: AtomicBool,
    started: Instant,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            database_up: AtomicBool::new(true),
            storage_up: AtomicBool::new(true),
            database_latency_ms: AtomicU64::new(0),
            storage_latency_ms: AtomicU64::new(0),
            queue_length: AtomicU64::new(0),
            queue_oldest_seconds: AtomicI64::new(-1),
            storage_bytes: AtomicU64::new(0),
            storage_limit_bytes: AtomicU64::new(0),
            failed_children: Mutex::new(Vec::new()),
            store_lost: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            schema_problem: Mutex::new(None),
            schema_ok: AtomicBool::new(true),
            started: Instant::now(),
        }
    }
}

/// The queue as of the last database probe.
#[derive(Debug, Clone, Serialize)]
pub struct QueueHealth {
    pub length: u64,
    pub oldest_age_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DependencyHealth {
    pub up: bool,
    pub latency_ms: u64,
}

impl HealthState {
    /// New mail can be accepted only while both dependencies answer (SPEC M4).
    /// A StorageActor that spent its restart budget counts as a storage outage that no
    /// probe ends.
    pub fn accepting_mail(&self) -> bool {
        self.database_up.load(Ordering::Acquire)
            && self.storage_up.load(Ordering::Acquire)
            && !self.store_lost.load(Ordering::Acquire)
            && self.schema_ok.load(Ordering::Acquire)
    }

    /// What the last probe found of the schema: None when this binary can work on it.
    /// Returns true when that changed.
    pub(crate) fn set_schema_problem(&self, problem: Option<String>) -> bool {
        let mut current = self
            .schema_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.schema_ok.store(problem.is_none(), Ordering::Release);
        let changed = *current != problem;
        *current = problem;
        changed
    }

    /// Why the schema does not suit this binary, if it does not.
    pub fn schema_problem(&self) -> Option<String> {
        self.schema_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The StorageActor is down for good (its restart budget spent): new mail is
    /// answered 451 at MAIL instead of failing at the end of each DATA.
    pub fn mark_store_lost(&self) {
        self.store_lost.store(true, Ordering::Release);
    }

    /// The shutdown has begun (SIGTERM): this node is no longer ready for new work.
    pub fn set_leaving(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    pub fn leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    pub fn get(&self, dependency: Dependency) -> DependencyHealth {
        let (up, latency) = match dependency {
            Dependency::Database => (&self.database_up, &self.database_latency_ms),
            Dependency::Storage => (&self.storage_up, &self.storage_latency_ms),
        };
        DependencyHealth {
            up: up.load(Ordering::Acquire),
            latency_ms: latency.load(Ordering::Relaxed),
        }
    }

    pub fn queue(&self) -> QueueHealth {
        let oldest = self.queue_oldest_seconds.load(Ordering::Relaxed);
        QueueHealth {
            length: self.queue_length.load(Ordering::Relaxed),
            oldest_age_seconds: (oldest >= 0).then_some(oldest),
        }
    }

    pub(crate) fn set_queue(&self, length: u64, oldest_age_seconds: Option<i64>) {
        self.queue_length.store(length, Ordering::Relaxed);
        self.queue_oldest_seconds
            .store(oldest_age_seconds.unwrap_or(-1), Ordering::Relaxed);
        let m = metrics();
        m.queue_length.set(length as i64);
        m.queue_oldest_seconds.set(oldest_age_seconds.unwrap_or(0));
    }

    /// The store's size limit (`storage.limit_bytes`, 0 for none).
    pub fn set_storage_limit(&self, limit: u64) {
        self.storage_limit_bytes.store(limit, Ordering::Relaxed);
        metrics().storage_limit_bytes.set(limit as i64);
    }

    /// Bytes of stored bodies, as the HealthMonitor's database probe summed them.
    pub fn set_storage_bytes(&self, bytes: u64) {
        self.storage_bytes.store(bytes, Ordering::Relaxed);
        metrics().storage_bytes.set(bytes as i64);
    }

    /// Bytes stored and the limit (0: none), as of the last probe.
    pub fn storage(&self) -> (u64, u64) {
        (
            self.storage_bytes.load(Ordering::Relaxed),
            self.storage_limit_bytes.load(Ordering::Relaxed),
        )
    }

    /// A child of the actor tree spent its restart budget: it stays down, and
    /// `/health/ready` names it until the node is restarted.
    pub fn child_failed(&self, name: &str) {
        let mut failed = self
            .failed_children
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !failed.iter().any(|f| f == name) {
            failed.push(name.to_string());
        }
    }

    /// The children down for good, by name (empty while the tree is whole).
    pub fn failed_children(&self) -> Vec<String> {
        self.failed_children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The store has reached `storage.limit_bytes`: new mail gets 452 4.3.1.
    pub fn storage_full(&self) -> bool {
        let (bytes, limit) = self.storage();
        limit > 0 && bytes >= limit
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Records a probe result; returns true when the state flipped.
    pub(crate) fn set(&self, dependency: Dependency, up: bool, latency_ms: u64) -> bool {
        let (flag, latency) = match dependency {
            Dependency::Database => (&self.database_up, &self.database_latency_ms),
            Dependency::Storage => (&self.storage_up, &self.storage_latency_ms),
        };
        latency.store(latency_ms, Ordering::Relaxed);
        let name = match dependency {
            Dependency::Database => "database",
            Dependency::Storage => "storage",
        };
        metrics().up.with_label_values(&[name]).set(i64::from(up));
        flag.swap(up, Ordering::AcqRel) != up
    }

    /// Marks a dependency down without a probe (tests, and callers that know).
    pub fn mark_down(&self, dependency: Dependency) -> bool {
        self.set(dependency, false, 0)
    }

    pub(crate) fn is_up(&self, dependency: Dependency) -> bool {
        self.get(dependency).up
    }
}

/// An actor saw a dependency fail: probe now instead of waiting for the interval.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct DependencyFailed(pub Dependency);
