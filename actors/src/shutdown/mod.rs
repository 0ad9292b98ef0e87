//! ShutdownCoordinator (SPEC O11): on SIGTERM or SIGINT `/health/ready` turns 503 and
//! the service manager hears STOPPING=1 at once; after `server.shutdown.
//! close_delay_seconds` (0 by default: at once), during which load balancers take the
//! node out and new connections are still served, the listeners stop accepting and
//! open sessions may finish for `server.shutdown.timeout_seconds`, then the remaining
//! ones get 421 and are closed. When every session is gone the coordinator reports
//! `Finished` so `serve` can stop the HTTP server, close the database and exit 0.
//! Meanwhile the QueueWorkers finish the delivery in flight for up to
//! `server.shutdown.drain_timeout_seconds` and release the rest; the coordinator waits
//! for them too.
//!
//! The phase is a `watch` channel every listener and session observes (STYLE 7); the
//! wait is on the [`SessionRegistry`] count, not on senders being dropped.
//!
//! - [`sessions`] — [`SessionRegistry`]: the open SMTP sessions, capped and counted
//!
//! The sessions, listeners, limits and QueueWorkers all watch the [`Phase`], so this
//! module names nothing of theirs.

pub mod sessions;

pub use sessions::{SessionGuard, SessionRegistry};

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

use crate::health_state::HealthState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Not accepting; sessions with an open transaction may finish it.
    Draining,
    /// Time is up: every session says 421 and closes.
    Closing,
}

/// Begin the graceful shutdown (what SIGTERM does).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct BeginShutdown {
    pub reason: &'static str,
}

pub struct ShutdownCoordinator {
    phase: watch::Sender<Phase>,
    registry: Arc<SessionRegistry>,
    /// Marked leaving at the first signal (readiness 503).
    health: Arc<HealthState>,
    /// From the first signal to the listeners closing.
    close_delay: Duration,
    /// The first signal came and the close delay runs (the phase is still Running).
    leaving: Option<SpawnHandle>,
    timeout: Duration,
    /// Closed when every QueueWorker has finished its in-flight deliveries and released
    /// the rest (each holds a sender).
    queue_done: Option<mpsc::Receiver<()>>,
    drain_timeout: Duration,
    finished: Option<oneshot::Sender<()>>,
}

impl ShutdownCoordinator {
    pub fn new(
        phase: watch::Sender<Phase>,
        registry: Arc<SessionRegistry>,
        health: Arc<HealthState>,
        timeouts: &crate::config::ShutdownConfig,
        queue_done: mpsc::Receiver<()>,
        finished: oneshot::Sender<()>,
    ) -> Self {
        ShutdownCoordinator {
            phase,
            registry,
            health,
            close_delay: Duration::from_secs(timeouts.close_delay_seconds),
            leaving: None,
            timeout: Duration::from_secs(timeouts.timeout_seconds),
            queue_done: Some(queue_done),
            drain_timeout: Duration::from_secs(timeouts.drain_timeout_seconds),
            finished: Some(finished),
        }
    }
}

impl Actor for ShutdownCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        actix::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!(component = "supervisor", "cannot install signal handlers");
                return;
            };
            loop {
                let reason = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                me.do_send(BeginShutdown { reason });
            }
        });
    }
}

impl Handler<BeginShutdown> for ShutdownCoordinator {
    type Result = ();

    fn handle(&mut self, msg: BeginShutdown, ctx: &mut Context<Self>) {
        let current = *self.phase.borrow();
        match current {
            Phase::Running if self.leaving.is_none() && !self.close_delay.is_zero() => {
                self.leave(msg);
                let reason = msg.reason;
                self.leaving = Some(ctx.run_later(self.close_delay, move |act, ctx| {
                    act.drain(reason, ctx);
                }));
            }
            Phase::Running => {
                if let Some(delay) = self.leaving.take() {
                    // A second signal during the close delay: close the listeners now.
                    ctx.cancel_future(delay);
                    tracing::warn!(
                        component = "supervisor",
                        reason = msg.reason,
                        "second shutdown signal, closing the listeners now"
                    );
                } else {
                    self.leave(msg);
                }
                self.drain(msg.reason, ctx);
            }
            Phase::Draining => {
                // A second signal: stop waiting.
                tracing::warn!(
                    component = "supervisor",
                    reason = msg.reason,
                    "second shutdown signal, closing sessions now"
                );
                self.phase.send_replace(Phase::Closing);
            }
            Phase::Closing => {}
        }
    }
}

impl ShutdownCoordinator {
    /// The first signal: no longer ready (503), and the service manager is told.
    fn leave(&self, msg: BeginShutdown) {
        self.health.set_leaving();
        crate::systemd::tell("STOPPING=1");
        tracing::info!(
            component = "supervisor",
            event = "shutdown_begin",
            reason = msg.reason,
            sessions = self.registry.active(),
            close_delay_seconds = self.close_delay.as_secs(),
            timeout_seconds = self.timeout.as_secs(),
            "graceful shutdown: readiness now 503; listeners close after the close delay"
        );
    }

    /// The listeners close; sessions and queue workers finish, then `finished` fires.
    fn drain(&mut self, reason: &'static str, ctx: &mut Context<Self>) {
        self.leaving = None;
        tracing::info!(
            component = "supervisor",
            event = "shutdown_drain",
            reason,
            sessions = self.registry.active(),
            timeout_seconds = self.timeout.as_secs(),
            "no new connections, waiting for sessions"
        );
        crate::systemd::status(&format!(
            "draining: {} SMTP sessions open",
            self.registry.active()
        ));
        self.phase.send_replace(Phase::Draining);
        let registry = self.registry.clone();
        let timeout = self.timeout;
        let phase = self.phase.clone();
        let queue_done = self.queue_done.take();
        // Workers enforce the drain timeout themselves; this bound only covers a worker
        // stuck recording its results.
        let queue_bound = self.drain_timeout + Duration::from_secs(10);
        let queue = async move {
            if let Some(mut done) = queue_done {
                if tokio::time::timeout(queue_bound, done.recv())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        component = "supervisor",
                        "queue workers did not finish in time"
                    );
                }
                tracing::info!(
                    component = "supervisor",
                    event = "shutdown_queue_done",
                    "queue workers finished"
                );
            }
        };
        let sessions = async move {
            if tokio::time::timeout(timeout, registry.wait_idle())
                .await
                .is_err()
            {
                tracing::warn!(
                    component = "supervisor",
                    sessions = registry.active(),
                    "shutdown timeout reached, closing remaining sessions with 421"
                );
                phase.send_replace(Phase::Closing);
                // Sessions answer 421 at once; the bound only covers a stuck peer write.
                let _ = tokio::time::timeout(Duration::from_secs(10), registry.wait_idle()).await;
            }
        };
        let fut = async move {
            futures::join!(sessions, queue);
        };
        ctx.spawn(fut.into_actor(self).map(|_, act, _| {
            tracing::info!(
                component = "supervisor",
                event = "shutdown_sessions_done",
                "all SMTP sessions closed"
            );
            if let Some(finished) = act.finished.take() {
                let _ = finished.send(());
            }
        }));
    }
}
