//! ShutdownCoordinator (SPEC O11): on SIGTERM or SIGINT the listeners stop accepting,
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
        timeout: Duration,
        queue_done: mpsc::Receiver<()>,
        drain_timeout: Duration,
        finished: oneshot::Sender<()>,
    ) -> Self {
        ShutdownCoordinator {
            phase,
            registry,
            timeout,
            queue_done: Some(queue_done),
            drain_timeout,
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
            Phase::Running => {}
            Phase::Draining => {
                // A second signal: stop waiting.
                tracing::warn!(
                    component = "supervisor",
                    reason = msg.reason,
                    "second shutdown signal, closing sessions now"
                );
                self.phase.send_replace(Phase::Closing);
                return;
            }
            Phase::Closing => return,
        }
        tracing::info!(
            component = "supervisor",
            event = "shutdown_begin",
            reason = msg.reason,
            sessions = self.registry.active(),
            timeout_seconds = self.timeout.as_secs(),
            "graceful shutdown: no new connections, waiting for sessions"
        );
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
