//! Supervisor: the root of the actor tree. It owns the configuration, the database
//! connection pool and the object store handle, starts the children in dependency order
//! (one function each, in `supervisor/start.rs`), and restarts those that fail. The HTTP
//! server is started by `serve` with the handles from [`GetHandles`].
//!
//! ```text
//! Supervisor                 restarts (child.rs, restart.rs)
//!  ├─ HealthMonitor          actor, restarted in place (same address)
//!  ├─ StorageActor           actor, restarted in place (same address)
//!  ├─ ShutdownCoordinator    actor, not restarted (it only turns signals into phases)
//!  ├─ QueueWorker × N        tasks on the queue arbiter, rebuilt
//!  ├─ SmtpListener × L × W   tasks, one per listener on each of the W SMTP arbiters,
//!  │   └─ SmtpSession        rebuilt on the same socket; sessions are not restarted
//!  ├─ Janitor                a task of the Supervisor's own, ends at shutdown
//!  └─ hook refresh           a task of the Supervisor's own, ends at shutdown
//! ```
//!
//! A supervised child that panics or stops while the node runs is reported to the
//! Supervisor ([`ChildExited`]), which restarts it after a backoff that doubles (100 ms
//! up to 10 s), at most 5 times within 60 s per child ([`restart`]). Each restart logs
//! `actor_restarted` (the child, and the reason: "panicked", "stopped" or the error) and
//! counts in `mairust_actor_restarts_total{actor}`. A child that spends its budget stays
//! down: `actor_restart_budget_spent` is logged and `/health/ready` reports the node
//! unhealthy, naming the child. Once the shutdown has begun nothing is restarted.

mod child;
pub mod restart;
mod start;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use self::child::supervise_task;
pub use self::child::{ChildExited, ChildId, ChildKind, Exit, Restart, Watch, supervise_actor};
use self::restart::RestartHistory;
use self::start::{
    open_store, resolver, smtp_workers, start_health_monitor, start_listeners, start_queue_workers,
    start_storage,
};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::health::HealthMonitor;
use crate::health_state::HealthState;
use crate::hooks::HookDispatcher;
use crate::janitor::{Janitor, Purge};
use crate::limits::NodeLimits;
use crate::metrics::metrics;
use crate::queue::QueueContext;
use crate::queue::client::ClientSettings;
use crate::queue::route::Router;
use crate::shutdown::SessionRegistry;
use crate::shutdown::{Phase, ShutdownCoordinator};
use crate::smtp::session::SessionContext;
use crate::smtp::tls;
use crate::storage::{BodyStore, StorageActor};
use crate::submission::Pipeline;

/// What the HTTP server and `serve` need from the running tree.
#[derive(Clone)]
pub struct Handles {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub bodies: BodyStore,
    pub health: Arc<HealthState>,
    /// Valid across restarts of the HealthMonitor.
    pub health_monitor: Addr<HealthMonitor>,
    /// Valid across restarts of the StorageActor.
    pub storage: Addr<StorageActor>,
    pub shutdown: Addr<ShutdownCoordinator>,
    pub sessions: Arc<SessionRegistry>,
    /// Bound addresses, by listener name (port 0 in the config becomes a real port).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    pub node_id: String,
    pub hooks: Arc<HookDispatcher>,
    pub audit: Arc<AuditLog>,
    pub limits: Arc<NodeLimits>,
    /// The way every message gets in (SMTP and `POST /send`).
    pub pipeline: Arc<Pipeline>,
    /// The SMTP listeners' certificate (`smtp.tls`), reloaded by `serve`.
    pub smtp_certs: Option<Arc<crate::certs::CertStore>>,
}

/// How often API-defined hooks are re-read from the database.
const HOOK_REFRESH: Duration = Duration::from_secs(10);

pub struct Supervisor {
    handles: Handles,
    /// Arbiters running SMTP sessions and the queue workers; stopped with the supervisor.
    arbiters: Vec<ArbiterHandle>,
    /// Once the shutdown has begun, children that end stay down: they end because of it.
    phase: watch::Receiver<Phase>,
    /// Each child's recent restarts (by name), for its backoff and its budget.
    restarts: HashMap<String, RestartHistory>,
    /// Housekeeping, run as a supervised task once the Supervisor starts.
    janitor: Option<Arc<Janitor>>,
}

/// The handles of the running tree.
#[derive(Message)]
#[rtype(result = "Handles")]
pub struct GetHandles;

/// Where the children report their end: the Supervisor's mailbox, open before the
/// Supervisor itself runs (reports wait there until the whole tree is started).
struct Reports(Recipient<ChildExited>);

impl Reports {
    fn watch(&self, kind: ChildKind, name: impl Into<String>) -> Watch {
        Watch {
            child: ChildId::new(kind, name),
            supervisor: self.0.clone(),
        }
    }
}

impl Supervisor {
    /// Builds and starts the tree. `finished` fires when the graceful shutdown is done.
    pub async fn start(
        config: Arc<Config>,
        db: DatabaseConnection,
        finished: oneshot::Sender<()>,
    ) -> anyhow::Result<Addr<Supervisor>> {
        let context = Context::<Supervisor>::new();
        let reports = Reports(context.address().recipient());
        let node_id = format!(
            "{}-{}",
            config.server.hostname,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let bodies = open_store(&config, &db).await?;
        let audit = AuditLog::open(&config.audit, db.clone(), node_id.clone())?;
        let purge = Purge::new(db.clone(), bodies.clone(), &config.retention);
        let janitor = Janitor::new(
            db.clone(),
            audit.clone(),
            config.audit.retention_days,
            purge,
        );
        let health = Arc::new(HealthState::default());
        health.set_storage_limit(config.storage.limit_bytes);
        let health_monitor =
            start_health_monitor(&config, &bodies, &health, &node_id, &reports).await?;
        let wakeup = Arc::new(Notify::new());
        let storage =
            start_storage(&config, &db, &bodies, &health_monitor, &wakeup, &reports).await?;

        let limits = &config.smtp.limits;
        let sessions = SessionRegistry::new(
            limits.max_sessions,
            limits.max_sessions_per_ip,
            limits.ipv6_prefix_length,
        );
        let node_limits = NodeLimits::new(&config);
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let (queue_done_tx, queue_done_rx) = mpsc::channel(1);
        let shutdown = ShutdownCoordinator::new(
            phase_tx,
            sessions.clone(),
            health.clone(),
            &config.server.shutdown,
            queue_done_rx,
            finished,
        )
        .start();

        let queue_ctx = Arc::new(QueueContext {
            config: config.clone(),
            db: db.clone(),
            bodies: bodies.clone(),
            storage: storage.clone(),
            health: health.clone(),
            health_monitor: health_monitor.clone().recipient(),
            node_id: node_id.clone(),
            router: Router::new(&config.delivery, resolver(&config)?),
            client: ClientSettings::new(&config).map_err(anyhow::Error::msg)?,
            wakeup,
            shutdown: phase_rx.clone(),
            paused: std::sync::atomic::AtomicBool::new(false),
        });
        let queue_arbiter = start_queue_workers(queue_ctx, queue_done_tx, &reports);

        let (tls, smtp_certs) = match &config.smtp.tls {
            Some(t) => {
                let (acceptor, store) = tls::load_acceptor(t, &config.server.hostname)?;
                (Some(acceptor), Some(store))
            }
            None => (None, None),
        };
        let policy = crate::hooks::TargetPolicy::from_config(&config.hook_policy)?;
        let hooks = Arc::new(HookDispatcher::new(&config.hooks, policy)?);
        if let Err(e) = hooks.refresh(&db).await {
            tracing::warn!(component = "hook", event = "hooks_not_loaded", error = %e, "hooks from the database not loaded yet");
        }
        let pipeline = Arc::new(Pipeline {
            config: config.clone(),
            directory: crate::submission::directory::for_database(&db),
            storage: storage.clone().recipient(),
            hooks: hooks.clone(),
            health: health.clone(),
            health_monitor: health_monitor.clone().recipient(),
            dkim: crate::dkim::Signer::new(&config.dkim, db.clone()),
            sender_auth: crate::sender_auth::Checker::new(&config).map_err(anyhow::Error::msg)?,
            spam: crate::spam::Rspamd::new(&config.spam.rspamd).map_err(anyhow::Error::msg)?,
            send_limits: Some(Arc::new(crate::limits::sending::SendLimits::new(
                &config.send_limits,
                db.clone(),
            ))),
        });
        if let Some(dkim) = &pipeline.dkim {
            dkim.check_at_start().await;
        }
        let ctx = Arc::new(SessionContext {
            config: config.clone(),
            pipeline: pipeline.clone(),
            tls,
            shutdown: phase_rx.clone(),
            audit: audit.clone(),
            limits: node_limits.clone(),
        });
        crate::limits::throttle::spawn_summaries(
            Duration::from_secs(config.auth.audit_summary_seconds),
            audit.clone(),
            node_limits.clone(),
            ctx.shutdown.clone(),
        );
        let smtp_arbiters: Vec<ArbiterHandle> = (0..smtp_workers(&config))
            .map(|_| Arbiter::new().handle())
            .collect();
        let listeners = start_listeners(&ctx, &sessions, &smtp_arbiters, &reports)?;
        let mut arbiters = smtp_arbiters;
        arbiters.push(queue_arbiter);
        let handles = Handles {
            config,
            db,
            bodies,
            health,
            health_monitor,
            storage,
            shutdown,
            sessions,
            listeners,
            node_id,
            hooks,
            audit,
            limits: node_limits,
            pipeline,
            smtp_certs,
        };
        Ok(context.run(Supervisor {
            handles,
            arbiters,
            phase: phase_rx,
            restarts: HashMap::new(),
            janitor: Some(Arc::new(janitor)),
        }))
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    /// Two more supervised tasks, ending when the shutdown begins: the Janitor, and the
    /// hook refresh that brings hooks created through the API on any node to this one
    /// within seconds. They run beside the Supervisor, never inside its context: a
    /// panic there is one more child's restart, not the end of the tree.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let reports = Reports(ctx.address().recipient());
        let arbiter = Arbiter::current();
        if let Some(janitor) = self.janitor.take() {
            let phase = self.phase.clone();
            let watch = reports.watch(ChildKind::Janitor, "janitor");
            supervise_task(&arbiter, watch, move || {
                let (janitor, phase) = (janitor.clone(), phase.clone());
                async move {
                    janitor.run(phase).await;
                    Ok(())
                }
            });
        }
        let (hooks, db, phase) = (
            self.handles.hooks.clone(),
            self.handles.db.clone(),
            self.phase.clone(),
        );
        let watch = reports.watch(ChildKind::HookRefresh, "hook_refresh");
        supervise_task(&arbiter, watch, move || {
            let (hooks, db, mut phase) = (hooks.clone(), db.clone(), phase.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(HOOK_REFRESH) => {}
                        _ = phase.wait_for(|p| *p != Phase::Running) => return Ok(()),
                    }
                    if let Err(e) = hooks.refresh(&db).await {
                        tracing::debug!(component = "hook", error = %e, "hook refresh failed");
                    }
                }
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Handler<GetHandles> for Supervisor {
    type Result = MessageResult<GetHandles>;

    fn handle(&mut self, _: GetHandles, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.handles.clone())
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = Restart;

    /// Restart after the child's backoff, unless the shutdown has begun (it ended
    /// because of it; the StorageActor and the HealthMonitor still come back while
    /// sessions drain) or its budget is spent (it stays down, the node is unhealthy).
    fn handle(&mut self, msg: ChildExited, _: &mut Context<Self>) -> Restart {
        let ChildExited { child, exit } = msg;
        let actor = child.kind.name();
        let phase = *self.phase.borrow();
        let needed =
            phase == Phase::Running || (phase == Phase::Draining && child.kind.serves_the_drain());
        if !needed {
            tracing::debug!(component = "supervisor", actor, child = %child, reason = exit.reason(), "child ended during the shutdown");
            return Restart::No;
        }
        let history = self.restarts.entry(child.name.clone()).or_default();
        match history.next_restart(Instant::now()) {
            Some(wait) => {
                tracing::warn!(
                    component = "supervisor",
                    event = "actor_restarted",
                    actor,
                    child = %child,
                    reason = exit.reason(),
                    panic = exit.panic_message(),
                    restarts = history.recent(),
                    backoff_ms = wait.as_millis() as u64,
                    "child ended; restarting it after the backoff"
                );
                metrics().actor_restarted(actor);
                Restart::After(wait)
            }
            None => {
                tracing::error!(
                    component = "supervisor",
                    event = "actor_restart_budget_spent",
                    actor,
                    child = %child,
                    reason = exit.reason(),
                    panic = exit.panic_message(),
                    max_restarts = restart::MAX_RESTARTS,
                    window_seconds = restart::WINDOW.as_secs(),
                    "child keeps failing: it stays down and the node reports itself unhealthy"
                );
                self.handles.health.child_failed(&child.name);
                if child.kind == ChildKind::Storage {
                    self.handles.health.mark_store_lost();
                }
                Restart::No
            }
        }
    }
}
