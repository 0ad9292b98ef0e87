//! Supervisor: the root of the actor tree. It owns the configuration, the database
//! connection pool and the object store handle, and starts the children in dependency
//! order: HealthMonitor, StorageActor, ShutdownCoordinator, the QueueWorkers (on an
//! arbiter of their own), then the SMTP listeners whose sessions run on `smtp.workers`
//! arbiters. The HTTP server is started by `serve` with
//! the handles from [`Supervisor::handles`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::audit::AuditLog;
use crate::config::Config;
use crate::health::{HealthMonitor, ProbeNow};
use crate::health_state::HealthState;
use crate::hooks::HookDispatcher;
use crate::janitor::{Janitor, Purge};
use crate::limits::NodeLimits;
use crate::net::ListenerKind;
use crate::queue::client::ClientSettings;
use crate::queue::route::{HickoryResolver, NoResolver, Resolver, Router};
use crate::queue::{QueueContext, QueueWorker};
use crate::shutdown::SessionRegistry;
use crate::shutdown::{Phase, ShutdownCoordinator};
use crate::smtp::listener::SmtpListener;
use crate::smtp::session::SessionContext;
use crate::smtp::tls;
use crate::storage::{BodyStore, CommitMode, QueueHook, StorageActor, recover_unflushed};
use crate::submission::Pipeline;

/// What the HTTP server and `serve` need from the running tree.
#[derive(Clone)]
pub struct Handles {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub bodies: BodyStore,
    pub health: Arc<HealthState>,
    pub health_monitor: Addr<HealthMonitor>,
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
}

/// How often API-defined hooks are re-read from the database.
const HOOK_REFRESH: Duration = Duration::from_secs(10);

pub struct Supervisor {
    handles: Handles,
    /// Arbiters running SMTP sessions; stopped with the supervisor.
    arbiters: Arc<Vec<ArbiterHandle>>,
}

/// The handles of the running tree.
#[derive(Message)]
#[rtype(result = "Handles")]
pub struct GetHandles;

impl Supervisor {
    /// Builds and starts the tree. `finished` fires when the graceful shutdown is done.
    pub async fn start(
        config: Arc<Config>,
        db: DatabaseConnection,
        finished: oneshot::Sender<()>,
    ) -> anyhow::Result<Addr<Supervisor>> {
        let node_id = format!(
            "{}-{}",
            config.server.hostname,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        // Before anything writes to the store (the health probe does): a store that is
        // not this database's stops the start, naming it (storage::identity).
        let bodies = crate::storage::identity::open_verified(&config.storage, &db)
            .await
            .context("storage")?;
        if let Some(root) = bodies.fs_root() {
            let root = root.to_path_buf();
            // SQLite with a pid file (`serve` holds its lock): this process is the only
            // writer, so every temporary is a dead one. Otherwise another process may be
            // writing into the store.
            let older_than = if config.database.is_sqlite() && config.server.pid_file.is_some() {
                Duration::ZERO
            } else {
                crate::storage::bodies::STALE_TEMPORARY
            };
            let removed = tokio::task::spawn_blocking(move || {
                crate::storage::bodies::remove_stale_temporaries(&root, older_than)
            })
            .await?
            .context("storage: removing temporary files")?;
            if removed > 0 {
                tracing::info!(
                    component = "storage",
                    event = "temporaries_removed",
                    removed,
                    "removed temporary body files left by an earlier run"
                );
            }
        }
        let audit = AuditLog::open(&config.audit, db.clone(), node_id.clone())?;
        let purge = Purge::new(db.clone(), bodies.clone(), &config.retention);
        Janitor::new(audit.clone(), config.audit.retention_days, purge).start();
        let health = Arc::new(HealthState::default());
        health.set_storage_limit(config.storage.limit_bytes);
        let probe_db = crate::database::connect_probe(&config.database)
            .await
            .context("database (health probe connection)")?;
        let health_monitor = HealthMonitor::new(
            health.clone(),
            probe_db,
            bodies.clone(),
            config.health.clone(),
            node_id.clone(),
        )
        .start();
        // Know the dependencies' state before the first client does.
        health_monitor.send(ProbeNow).await.ok();
        // SQLite is single-node and only this process writes it: both flushes may run
        // at once, after removing what a crash left half-flushed (see storage::actor).
        let mode = if config.database.is_sqlite() {
            let removed = recover_unflushed(&db, &bodies).await?;
            if removed > 0 {
                tracing::warn!(
                    component = "storage",
                    event = "recovered",
                    removed,
                    "removed rows of unacknowledged messages left by a crash"
                );
            }
            CommitMode::Parallel
        } else {
            CommitMode::Ordered
        };
        let wakeup = Arc::new(Notify::new());
        let storage = StorageActor::new(
            db.clone(),
            bodies.clone(),
            mode,
            health_monitor.clone().recipient(),
            QueueHook {
                max_age: Duration::from_secs_f64(config.queue.max_age_seconds),
                wakeup: wakeup.clone(),
            },
        )
        .start();

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
            Duration::from_secs(config.server.shutdown.timeout_seconds),
            queue_done_rx,
            Duration::from_secs(config.server.shutdown.drain_timeout_seconds),
            finished,
        )
        .start();

        // The queue workers run on their own thread, beside the SMTP arbiters.
        let resolver: Arc<dyn Resolver> = match HickoryResolver::new(
            &config.delivery.dns.nameserver_addrs()?,
        ) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::warn!(component = "queue", error = %e, "no DNS resolver: mail without a route waits in the queue");
                Arc::new(NoResolver(e))
            }
        };
        let queue_ctx = Arc::new(QueueContext {
            config: config.clone(),
            db: db.clone(),
            bodies: bodies.clone(),
            storage: storage.clone(),
            health: health.clone(),
            health_monitor: health_monitor.clone().recipient(),
            node_id: node_id.clone(),
            router: Router::new(&config.delivery, resolver),
            client: ClientSettings::new(&config).map_err(anyhow::Error::msg)?,
            wakeup,
            shutdown: phase_rx.clone(),
            paused: std::sync::atomic::AtomicBool::new(false),
        });
        let queue_arbiter = Arbiter::new().handle();
        for index in 0..config.queue.workers {
            let (ctx, done) = (queue_ctx.clone(), queue_done_tx.clone());
            QueueWorker::start_in_arbiter(&queue_arbiter, move |_| {
                QueueWorker::new(ctx, index, done)
            });
        }
        drop(queue_done_tx);
        tracing::info!(
            component = "queue",
            event = "queue_started",
            workers = config.queue.workers,
            "queue workers started"
        );

        let tls = match &config.smtp.tls {
            Some(t) => Some(tls::load_acceptor(t, &config.server.hostname)?),
            None => None,
        };
        let policy = crate::hooks::TargetPolicy::from_config(&config.hook_policy)?;
        let hooks = Arc::new(HookDispatcher::new(&config.hooks, policy)?);
        if let Err(e) = hooks.refresh(&db).await {
            tracing::warn!(component = "hook", error = %e, "hooks from the database not loaded yet");
        }
        // Hooks created through the API on any node reach this one within seconds.
        {
            let (hooks, db) = (hooks.clone(), db.clone());
            actix::spawn(async move {
                loop {
                    tokio::time::sleep(HOOK_REFRESH).await;
                    if let Err(e) = hooks.refresh(&db).await {
                        tracing::debug!(component = "hook", error = %e, "hook refresh failed");
                    }
                }
            });
        }
        let pipeline = Arc::new(Pipeline {
            config: config.clone(),
            directory: Arc::new(db.clone()),
            storage: storage.clone().recipient(),
            hooks: hooks.clone(),
            health: health.clone(),
            health_monitor: health_monitor.clone().recipient(),
        });
        let ctx = Arc::new(SessionContext {
            config: config.clone(),
            pipeline: pipeline.clone(),
            tls,
            shutdown: phase_rx,
            audit: audit.clone(),
            limits: node_limits.clone(),
        });
        crate::limits::throttle::spawn_summaries(
            Duration::from_secs(config.auth.audit_summary_seconds),
            audit.clone(),
            node_limits.clone(),
            ctx.shutdown.clone(),
        );
        let workers = match config.smtp.workers {
            // One per CPU but one, left for the storage, database and HTTP threads.
            0 => {
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            }
            n => n,
        };
        let smtp_arbiters: Vec<ArbiterHandle> =
            (0..workers).map(|_| Arbiter::new().handle()).collect();
        let mut listeners = Vec::new();
        for (name, kind) in [
            ("inbound", ListenerKind::Inbound),
            ("submission", ListenerKind::Submission),
            ("submissions", ListenerKind::Submissions),
        ] {
            let lc = match name {
                "inbound" => &config.smtp.listeners.inbound,
                "submission" => &config.smtp.listeners.submission,
                _ => &config.smtp.listeners.submissions,
            };
            if !lc.enabled {
                continue;
            }
            let socket = std::net::TcpListener::bind(&lc.address).with_context(|| {
                format!("smtp.listeners.{name}: cannot listen on {}", lc.address)
            })?;
            let local = socket.local_addr()?;
            tracing::info!(component = "smtp", event = "listening", listener = name, addr = %local, "SMTP listener ready");
            listeners.push((name, local));
            for arbiter in smtp_arbiters.iter() {
                let socket = socket
                    .try_clone()
                    .with_context(|| format!("smtp.listeners.{name}: cannot share the socket"))?;
                let (ctx, sessions) = (ctx.clone(), sessions.clone());
                SmtpListener::start_in_arbiter(arbiter, move |_| {
                    SmtpListener::new(kind, socket, ctx, sessions)
                });
            }
        }
        let mut arbiters = smtp_arbiters;
        arbiters.push(queue_arbiter);
        let arbiters = Arc::new(arbiters);
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
        };
        Ok(Supervisor { handles, arbiters }.start())
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        for arbiter in self.arbiters.iter() {
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
