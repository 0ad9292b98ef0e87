//! HealthMonitor: probes the database and the object store every `health.interval`, and
//! at once when another actor reports a failure ([`DependencyFailed`]). The result lives
//! in [`HealthState`] ([`crate::health_state`]), which SMTP sessions read to answer 451
//! while a dependency is down (tempfail mode) and which `/health/ready` reports.
//! Recovery is noticed by the next probe: no restart. The state also lists the children
//! of the actor tree that spent their restart budget ([`HealthState::child_failed`]),
//! which make `/health/ready` fail.
//!
//! Only probes decide: a dependency is marked down after `health.failures_before_down`
//! consecutive failed probes (a failed probe is confirmed by another after a pause), never
//! by one failed call, since under load a call can fail for want of a pool slot while
//! the database is fine. The database probe runs on a connection of its own.
//! The database probe also counts the outbound queue and the stored bytes, so health
//! reports and metrics never query.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use sea_orm::DatabaseConnection;

use crate::config::HealthConfig;
use crate::database;
use crate::health_state::{Dependency, DependencyFailed, HealthState};
use crate::storage::bodies::BodyStore;

/// Run the probes once and wait for them (used at startup and by tests).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProbeNow;

pub struct HealthMonitor {
    prober: Arc<Prober>,
    interval: Duration,
}

/// What a probe needs, shared by the actor and the probes it runs in the background.
struct Prober {
    state: Arc<HealthState>,
    /// The probe's own connection ([`database::connect_probe`]).
    db: DatabaseConnection,
    bodies: BodyStore,
    config: HealthConfig,
    node_id: String,
    /// A probe, or a failed probe's confirmation pause, is under way: nothing else
    /// starts beside it, so the pause is kept.
    probing: AtomicBool,
    /// Consecutive failed probes of the database and of the store.
    failures: Mutex<[u32; 2]>,
    /// When the last probe started: failures reported by callers start one at most
    /// every [`MIN_REPORTED_GAP`], so an overloaded database is not probed in a loop.
    last_probe: Mutex<Option<Instant>>,
    /// When the stored bytes (a full sum over the messages) were last summed.
    last_sum: Mutex<Option<Instant>>,
}

/// The stored bytes are summed every this many probe intervals (30 s by default), on
/// the clock: probes started by reported failures do not add sums.
const STORAGE_SUM_EVERY: u32 = 6;
/// Least time between probes started by reported failures.
const MIN_REPORTED_GAP: Duration = Duration::from_secs(1);

/// Clears [`Prober::probing`] however the probe ends (also when it is dropped).
struct Probing<'a>(&'a AtomicBool);

impl Drop for Probing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HealthMonitor {
    pub fn new(
        state: Arc<HealthState>,
        db: DatabaseConnection,
        bodies: BodyStore,
        config: HealthConfig,
        node_id: String,
    ) -> Self {
        HealthMonitor {
            interval: config.interval(),
            prober: Arc::new(Prober {
                state,
                db,
                bodies,
                config,
                node_id,
                probing: AtomicBool::new(false),
                failures: Mutex::new([0, 0]),
                last_probe: Mutex::new(None),
                last_sum: Mutex::new(None),
            }),
        }
    }

    fn settle_in_background(&self, ctx: &mut Context<Self>) {
        let prober = self.prober.clone();
        ctx.spawn(async move { prober.settle().await }.into_actor(self));
    }
}

impl Prober {
    /// A failed probe is confirmed by another after this pause, so a short blip (a
    /// connection reset) is not an outage.
    fn confirm_delay(&self) -> Duration {
        (self.config.interval() / 4).max(Duration::from_millis(500))
    }

    /// Probes until the outcome is settled: a failure is probed again after
    /// [`Prober::confirm_delay`] until it clears or reaches `failures_before_down`.
    /// Returns at once when another settling is under way (its pause included).
    async fn settle(&self) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let _probing = Probing(&self.probing);
        while self.probe_once().await {
            tokio::time::sleep(self.confirm_delay()).await;
        }
    }

    /// One probe of both dependencies, applied; true when a failure awaits confirmation.
    async fn probe_once(&self) -> bool {
        crate::failpoint::failpoint!("health_probe");
        *lock(&self.last_probe) = Some(Instant::now());
        // Due a little early rather than late: interval ticks jitter.
        let every = self.config.interval() * STORAGE_SUM_EVERY - self.config.interval() / 2;
        let sum_storage = lock(&self.last_sum).is_none_or(|at| at.elapsed() >= every);
        let (db, bodies, state) = (&self.db, &self.bodies, &self.state);
        let (timeout, node) = (self.config.probe_timeout(), &self.node_id);
        let db_probe = async {
            let start = Instant::now();
            let ok = matches!(
                tokio::time::timeout(timeout, database::ping(db)).await,
                Ok(Ok(()))
            );
            let ms = start.elapsed().as_millis() as u64;
            if ok
                && let Ok(Ok((length, oldest))) =
                    tokio::time::timeout(timeout, crate::queue::admin::length(db)).await
            {
                state.set_queue(length, oldest);
            }
            if ok
                && let Ok(Ok(status)) =
                    tokio::time::timeout(timeout, database::schema_status(db)).await
            {
                self.apply_schema(&status);
            }
            if ok
                && sum_storage
                && let Ok(Ok(bytes)) =
                    tokio::time::timeout(timeout, crate::storage::stored_bytes(db)).await
            {
                state.set_storage_bytes(bytes);
                *lock(&self.last_sum) = Some(Instant::now());
            }
            (ok, ms)
        };
        let store_probe = async {
            let start = Instant::now();
            let result = tokio::time::timeout(timeout, bodies.probe(node)).await;
            if let Ok(Err(e)) = &result {
                tracing::debug!(component = "supervisor", error = %e, "storage probe failed");
            }
            (
                matches!(result, Ok(Ok(()))),
                start.elapsed().as_millis() as u64,
            )
        };
        let ((db_ok, db_ms), (store_ok, store_ms)) = futures::join!(db_probe, store_probe);
        self.apply([
            (Dependency::Database, db_ok, db_ms),
            (Dependency::Storage, store_ok, store_ms),
        ])
    }

    /// A breaking migration of a newer release applied under this running node: it
    /// stops taking mail (451) and turns unready until it is replaced; an additive one
    /// changes nothing. Logged once per change.
    fn apply_schema(&self, status: &database::SchemaStatus) {
        let problem = match status {
            database::SchemaStatus::Ahead { breaking, .. } if !breaking.is_empty() => {
                Some(format!(
                    "breaking migration(s) of a newer release applied: {}; upgrade this node",
                    breaking.join(", ")
                ))
            }
            database::SchemaStatus::Behind { pending } => Some(format!(
                "migration(s) rolled back under this node: {}",
                pending.join(", ")
            )),
            _ => None,
        };
        if self.state.set_schema_problem(problem.clone()) {
            match problem {
                Some(p) => {
                    tracing::error!(component = "supervisor", event = "schema_incompatible", problem = %p, "the database schema no longer suits this binary: no new mail (451), not ready")
                }
                None => tracing::info!(
                    component = "supervisor",
                    event = "schema_compatible",
                    "the database schema suits this binary again"
                ),
            }
        }
    }

    /// Applies a probe's results: up at once, down after `failures_before_down`
    /// consecutive failures. True when a failure awaits confirmation by another probe.
    fn apply(&self, results: [(Dependency, bool, u64); 2]) -> bool {
        let mut confirm = false;
        let mut all = lock(&self.failures);
        for (dep, ok, ms) in results {
            let failures = &mut all[dep as usize];
            *failures = if ok { 0 } else { failures.saturating_add(1) };
            let down = *failures >= self.config.failures_before_down;
            if !ok && !down {
                confirm = true;
                tracing::warn!(component = "supervisor", event = "probe_failed", dependency = ?dep, failures = *failures, "dependency probe failed; probing again before marking it down");
                // Still up until confirmed; keep the latency figure current.
                self.state.set(dep, self.state.is_up(dep), ms);
                continue;
            }
            if self.state.set(dep, ok, ms) {
                if ok {
                    tracing::info!(component = "supervisor", event = "dependency_up", dependency = ?dep, "dependency recovered, accepting mail again");
                } else {
                    tracing::error!(component = "supervisor", event = "dependency_down", dependency = ?dep, failures = *failures, "dependency down, SMTP answers 451 until it returns");
                }
            }
        }
        confirm
    }
}

impl Actor for HealthMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, ctx| act.settle_in_background(ctx));
    }
}

/// Restarted in place by the Supervisor (same address) after a panic: the probes it ran
/// are dropped with its old context and `started` arms the interval again.
impl Supervised for HealthMonitor {}

impl Handler<DependencyFailed> for HealthMonitor {
    type Result = ();

    /// A caller saw a failure: probe now, unless a probe started within
    /// [`MIN_REPORTED_GAP`]. Only the probes mark a dependency down.
    fn handle(&mut self, _: DependencyFailed, ctx: &mut Context<Self>) {
        let recent =
            lock(&self.prober.last_probe).is_some_and(|at| at.elapsed() < MIN_REPORTED_GAP);
        if !recent {
            self.settle_in_background(ctx);
        }
    }
}

impl Handler<ProbeNow> for HealthMonitor {
    type Result = ResponseActFuture<Self, ()>;

    /// Probes until the outcome is settled (a failure confirmed or cleared), in the
    /// actor's context like every probe, so a probe that panics takes the actor down
    /// for the Supervisor to restart.
    fn handle(&mut self, _: ProbeNow, _: &mut Context<Self>) -> Self::Result {
        let prober = self.prober.clone();
        Box::pin(async move { prober.settle().await }.into_actor(self))
    }
}
