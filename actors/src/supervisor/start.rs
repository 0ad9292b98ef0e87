//! Starting the children of the tree, one function each, in the order
//! [`Supervisor::start`](super::Supervisor::start) calls them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, mpsc};

use super::Reports;
use super::child::{ChildKind, supervise_actor, supervise_task};
use crate::config::Config;
use crate::health::{HealthMonitor, ProbeNow};
use crate::health_state::HealthState;
use crate::net::ListenerKind;
use crate::queue::QueueContext;
use crate::queue::route::{HickoryResolver, NoResolver, Resolver};
use crate::shutdown::SessionRegistry;
use crate::smtp::listener::SmtpListener;
use crate::smtp::session::SessionContext;
use crate::storage::bodies::sweep_placed;
use crate::storage::{BodyStore, CommitMode, QueueHook, StorageActor, recover_unflushed};

/// Opens the object store, verified to be this database's (storage::identity) before
/// anything writes to it (the health probe does), and removes dead temporary files.
pub(super) async fn open_store(
    config: &Config,
    db: &DatabaseConnection,
) -> anyhow::Result<BodyStore> {
    let bodies = crate::storage::identity::open_verified(&config.storage, db)
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
    Ok(bodies)
}

/// The HealthMonitor on its own database connection, after a first probe: the
/// dependencies' state is known before the first client is.
pub(super) async fn start_health_monitor(
    config: &Config,
    bodies: &BodyStore,
    health: &Arc<HealthState>,
    node_id: &str,
    reports: &Reports,
) -> anyhow::Result<Addr<HealthMonitor>> {
    let probe_db = crate::database::connect_probe(&config.database)
        .await
        .context("database (health probe connection)")?;
    let monitor = HealthMonitor::new(
        health.clone(),
        probe_db,
        bodies.clone(),
        config.health.clone(),
        node_id.to_string(),
    );
    let watch = reports.watch(ChildKind::HealthMonitor, "health_monitor");
    let monitor = supervise_actor(watch, Context::new(), monitor);
    monitor.send(ProbeNow).await.ok();
    Ok(monitor)
}

/// The StorageActor. SQLite is single-node and only this process writes it: both lanes
/// may flush at once, after removing what a crash left half-flushed (storage::actor).
pub(super) async fn start_storage(
    config: &Config,
    db: &DatabaseConnection,
    bodies: &BodyStore,
    health_monitor: &Addr<HealthMonitor>,
    wakeup: &Arc<Notify>,
    reports: &Reports,
) -> anyhow::Result<Addr<StorageActor>> {
    let mode = if config.database.is_sqlite() {
        let removed = recover_unflushed(db, bodies).await?;
        if removed > 0 {
            tracing::warn!(
                component = "storage",
                event = "recovered",
                removed,
                "removed rows of unacknowledged messages left by a crash"
            );
        }
        // Then the files a kill left made ahead for bodies: no spare is made before.
        // Young ones only when `serve` holds the pid file's lock (nobody else writes).
        if let Some(root) = bodies.fs_root() {
            let root = root.to_path_buf();
            let older_than = match config.server.pid_file {
                Some(_) => Duration::ZERO,
                None => crate::storage::bodies::STALE_TEMPORARY,
            };
            let swept = tokio::task::spawn_blocking(move || sweep_placed(&root, older_than))
                .await
                .map_err(anyhow::Error::from)?
                .context("removing the files made ahead for bodies before a kill")?;
            if swept > 0 {
                tracing::info!(
                    component = "storage",
                    event = "spares_removed",
                    removed = swept,
                    "removed the empty files made ahead for bodies that a kill left"
                );
            }
        }
        CommitMode::Parallel
    } else {
        CommitMode::Ordered
    };
    let storage = StorageActor::new(
        db.clone(),
        bodies.clone(),
        mode,
        health_monitor.clone().recipient(),
        QueueHook {
            max_age: Duration::from_secs_f64(config.queue.max_age_seconds),
            wakeup: wakeup.clone(),
        },
    );
    let watch = reports.watch(ChildKind::Storage, "storage");
    Ok(supervise_actor(watch, Context::new(), storage))
}

/// The DNS resolver of outbound delivery; without one, mail without a route waits.
pub(super) fn resolver(config: &Config) -> anyhow::Result<Arc<dyn Resolver>> {
    Ok(
        match HickoryResolver::new(&config.delivery.dns.nameserver_addrs()?) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::warn!(component = "queue", event = "no_resolver", error = %e, "no DNS resolver: mail without a route waits in the queue");
                Arc::new(NoResolver(e))
            }
        },
    )
}

/// `queue.workers` QueueWorkers on an arbiter of their own, beside the SMTP arbiters.
/// Each holds a clone of `done` until it stays down: the ShutdownCoordinator waits for
/// all of them to finish their deliveries in flight.
pub(super) fn start_queue_workers(
    queue: Arc<QueueContext>,
    done: mpsc::Sender<()>,
    reports: &Reports,
) -> ArbiterHandle {
    let arbiter = Arbiter::new().handle();
    let workers = queue.config.queue.workers;
    for index in 0..workers {
        let (queue, done) = (queue.clone(), done.clone());
        let watch = reports.watch(ChildKind::QueueWorker, format!("queue_worker#{index}"));
        supervise_task(&arbiter, watch, move || {
            let (queue, done) = (queue.clone(), done.clone());
            async move {
                crate::queue::worker::run(queue, index).await;
                drop(done);
                Ok(())
            }
        });
    }
    tracing::info!(
        component = "queue",
        event = "queue_started",
        workers,
        "queue workers started"
    );
    arbiter
}

/// SMTP arbiters: `smtp.workers`, or one per CPU but one, left for the storage,
/// database and HTTP threads.
pub(super) fn smtp_workers(config: &Config) -> usize {
    match config.smtp.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
        n => n,
    }
}

/// Binds each enabled listener and runs its accept loop on every SMTP arbiter (the
/// kernel spreads connections over them). Returns the bound addresses.
pub(super) fn start_listeners(
    ctx: &Arc<SessionContext>,
    sessions: &Arc<SessionRegistry>,
    arbiters: &[ArbiterHandle],
    reports: &Reports,
) -> anyhow::Result<Vec<(&'static str, SocketAddr)>> {
    let config = &ctx.config.smtp.listeners;
    let mut bound = Vec::new();
    for (name, kind, lc) in [
        ("inbound", ListenerKind::Inbound, &config.inbound),
        ("submission", ListenerKind::Submission, &config.submission),
        (
            "submissions",
            ListenerKind::Submissions,
            &config.submissions,
        ),
    ] {
        if !lc.enabled {
            continue;
        }
        let socket = std::net::TcpListener::bind(&lc.address)
            .with_context(|| format!("smtp.listeners.{name}: cannot listen on {}", lc.address))?;
        let local = socket.local_addr()?;
        tracing::info!(component = "smtp", event = "listening", listener = name, addr = %local, "SMTP listener ready");
        bound.push((name, local));
        let proxies = match &lc.proxy_protocol {
            Some(p) => Some(Arc::new(crate::smtp::listener::TrustedProxies::new(
                p.networks(name).map_err(|e| anyhow::anyhow!("{e}"))?,
                Duration::from_secs(p.timeout_seconds),
                ctx.config.smtp.limits.max_sessions,
            ))),
            None => None,
        };
        for (index, arbiter) in arbiters.iter().enumerate() {
            let socket = socket
                .try_clone()
                .with_context(|| format!("smtp.listeners.{name}: cannot share the socket"))?;
            let listener =
                SmtpListener::new(kind, socket, ctx.clone(), sessions.clone(), proxies.clone());
            let watch = reports.watch(
                ChildKind::SmtpListener,
                format!("smtp_listener:{name}#{index}"),
            );
            supervise_task(arbiter, watch, move || listener.accept_loop());
        }
    }
    Ok(bound)
}
