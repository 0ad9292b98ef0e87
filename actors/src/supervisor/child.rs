//! The children the Supervisor watches, and the runners that watch them: each child runs
//! inside a runner that catches its panic or notices its end, asks the Supervisor
//! ([`ChildExited`]) whether and when it comes back, waits the backoff, and restarts it.
//!
//! - Actors ([`supervise_actor`]: the StorageActor, the HealthMonitor) restart in place:
//!   the runner keeps the actor's context and mailbox, so every `Addr` and `Recipient`
//!   handed out before a restart reaches the restarted actor. The actor resets itself in
//!   [`actix::Supervised::restarting`]; messages that arrive meanwhile wait in the
//!   mailbox. (actix's own `Supervisor` restarts a stopped actor but dies with a
//!   panicking one: its future is polled in the panicking task.)
//! - Tasks ([`supervise_task`]: the QueueWorkers, the SMTP accept loops, the Janitor,
//!   the hook refresh) are plain
//!   futures on an arbiter: nobody holds an address of theirs, so a restart builds a new
//!   future.
//!
//! A runner whose child may not come back (shutdown, or the budget spent) ends, and with
//! it the child's mailbox or whatever the task's maker held.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use actix::dev::{AsyncContextParts, ContextFut};
use actix::prelude::*;
use futures::FutureExt;

/// What a child is: the `actor` label of `mairust_actor_restarts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    Storage,
    QueueWorker,
    SmtpListener,
    HealthMonitor,
    Janitor,
    HookRefresh,
}

impl ChildKind {
    pub const ALL: [ChildKind; 6] = [
        ChildKind::Storage,
        ChildKind::QueueWorker,
        ChildKind::SmtpListener,
        ChildKind::HealthMonitor,
        ChildKind::Janitor,
        ChildKind::HookRefresh,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChildKind::Storage => "storage",
            ChildKind::QueueWorker => "queue_worker",
            ChildKind::SmtpListener => "smtp_listener",
            ChildKind::HealthMonitor => "health_monitor",
            ChildKind::Janitor => "janitor",
            ChildKind::HookRefresh => "hook_refresh",
        }
    }

    /// Children that sessions still need while they finish their transactions during
    /// the drain: restarted until the shutdown's closing phase, not only while running.
    pub fn serves_the_drain(self) -> bool {
        matches!(self, ChildKind::Storage | ChildKind::HealthMonitor)
    }
}

/// One child of the tree: its kind and a name unique within the node
/// (`queue_worker#1`, `smtp_listener:inbound#0`): each has a restart budget of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChildId {
    pub kind: ChildKind,
    pub name: String,
}

impl ChildId {
    pub fn new(kind: ChildKind, name: impl Into<String>) -> Self {
        ChildId {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It panicked; the panic's message.
    Panicked(String),
    /// It stopped (an actor) or its future returned (a task).
    Stopped,
    /// Its future returned this error.
    Failed(String),
}

impl Exit {
    /// The `reason` of the `actor_restarted` event: "panicked", "stopped" or the error.
    pub fn reason(&self) -> &str {
        match self {
            Exit::Panicked(_) => "panicked",
            Exit::Stopped => "stopped",
            Exit::Failed(error) => error,
        }
    }

    /// The panic's message, for a child that panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            Exit::Panicked(message) => Some(message),
            _ => None,
        }
    }

    fn from_panic(payload: Box<dyn Any + Send>) -> Exit {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Exit::Panicked(message)
    }
}

/// A child ended: the Supervisor answers whether it comes back, and after what wait.
#[derive(Message, Debug)]
#[rtype(result = "Restart")]
pub struct ChildExited {
    pub child: ChildId,
    pub exit: Exit,
}

/// The Supervisor's answer to [`ChildExited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub enum Restart {
    After(Duration),
    /// Shutdown, or the child's budget is spent: it stays down.
    No,
}

/// What a runner needs: whom it runs and whom it asks.
#[derive(Clone)]
pub struct Watch {
    pub child: ChildId,
    pub supervisor: Recipient<ChildExited>,
}

impl Watch {
    /// The child ended with `exit`: true once it may start again (after the backoff),
    /// false when it stays down (also when the Supervisor is gone: the node is stopping).
    async fn may_restart(&self, exit: Exit) -> bool {
        let asked = self.supervisor.send(ChildExited {
            child: self.child.clone(),
            exit,
        });
        match asked.await {
            Ok(Restart::After(wait)) => {
                tokio::time::sleep(wait).await;
                true
            }
            Ok(Restart::No) | Err(_) => false,
        }
    }
}

/// Starts `act` on the current arbiter under `watch`: restarted in place, with the same
/// mailbox, after a panic or a stop. Returns its address, valid across restarts.
pub fn supervise_actor<A>(watch: Watch, ctx: Context<A>, act: A) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    let addr = ctx.address();
    actix::spawn(run_actor(watch, ctx.into_future(act)));
    addr
}

async fn run_actor<A>(watch: Watch, mut running: ContextFut<A, Context<A>>)
where
    A: Actor<Context = Context<A>> + Supervised,
{
    loop {
        // The context is reset by `restart` before it is polled again, so a panic
        // leaves nothing half-done behind: its spawned futures are dropped and the
        // actor resets its state in `Supervised::restarting`. Meanwhile (the backoff)
        // messages wait in the mailbox.
        let exit = match AssertUnwindSafe(&mut running).catch_unwind().await {
            Ok(()) => Exit::Stopped,
            Err(payload) => Exit::from_panic(payload),
        };
        // No sender left: nobody could reach a restarted actor.
        if !running.ctx().parts().connected() {
            return;
        }
        if !watch.may_restart(exit).await {
            // Dropped as it is, without running it again: the messages it held and
            // those waiting in its mailbox go unanswered (their senders get an error).
            running.ctx().terminate();
            return;
        }
        running.restart();
    }
}

/// Runs the futures `make` builds, one at a time, on `arbiter` under `watch`: a new one
/// after the last panicked or returned. `make` (and what it holds) is dropped when the
/// child stays down.
pub fn supervise_task<M, F>(arbiter: &ArbiterHandle, watch: Watch, make: M)
where
    M: FnMut() -> F + Send + 'static,
    F: Future<Output = Result<(), String>> + 'static,
{
    arbiter.spawn_fn(move || {
        actix::spawn(run_task(watch, make));
    });
}

async fn run_task<M, F>(watch: Watch, mut make: M)
where
    M: FnMut() -> F,
    F: Future<Output = Result<(), String>>,
{
    loop {
        let exit = match AssertUnwindSafe(make()).catch_unwind().await {
            Ok(Ok(())) => Exit::Stopped,
            Ok(Err(error)) => Exit::Failed(error),
            Err(payload) => Exit::from_panic(payload),
        };
        if !watch.may_restart(exit).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers every exit with a short restart, at most `budget` times, and records them.
    struct Recorder {
        exits: Vec<(String, Exit)>,
        budget: usize,
    }

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<ChildExited> for Recorder {
        type Result = Restart;

        fn handle(&mut self, msg: ChildExited, _: &mut Context<Self>) -> Restart {
            self.exits.push((msg.child.name, msg.exit));
            if self.exits.len() > self.budget {
                Restart::No
            } else {
                Restart::After(Duration::from_millis(1))
            }
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<(String, Exit)>")]
    struct Exits;

    impl Handler<Exits> for Recorder {
        type Result = MessageResult<Exits>;

        fn handle(&mut self, _: Exits, _: &mut Context<Self>) -> Self::Result {
            MessageResult(self.exits.clone())
        }
    }

    /// Counts its starts; panics or stops on request.
    struct Flaky {
        starts: Arc<AtomicUsize>,
        handled: usize,
    }

    impl Actor for Flaky {
        type Context = Context<Self>;

        fn started(&mut self, _: &mut Context<Self>) {
            self.starts.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Supervised for Flaky {
        fn restarting(&mut self, _: &mut Context<Self>) {
            self.handled = 0;
        }
    }

    #[derive(Message)]
    #[rtype(result = "usize")]
    enum Do {
        Count,
        Panic,
        Stop,
    }

    impl Handler<Do> for Flaky {
        type Result = usize;

        fn handle(&mut self, msg: Do, ctx: &mut Context<Self>) -> usize {
            self.handled += 1;
            match msg {
                Do::Count => self.handled,
                Do::Panic => panic!("asked to panic"),
                Do::Stop => {
                    ctx.stop();
                    self.handled
                }
            }
        }
    }

    async fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached");
    }

    #[test]
    fn every_kind_is_a_label_of_the_restart_metric() {
        assert_eq!(
            ChildKind::ALL.map(ChildKind::name),
            crate::metrics::SUPERVISED_ACTORS
        );
    }

    #[actix_rt::test]
    async fn an_actor_that_panics_or_stops_comes_back_behind_the_same_address() {
        let recorder = Recorder {
            exits: Vec::new(),
            budget: 2,
        }
        .start();
        let starts = Arc::new(AtomicUsize::new(0));
        let watch = Watch {
            child: ChildId::new(ChildKind::Storage, "flaky"),
            supervisor: recorder.clone().recipient(),
        };
        let flaky = Flaky {
            starts: starts.clone(),
            handled: 0,
        };
        let addr = supervise_actor(watch, Context::new(), flaky);
        assert_eq!(addr.send(Do::Count).await.unwrap(), 1);
        assert!(
            addr.send(Do::Panic).await.is_err(),
            "the panicking message gets no answer"
        );
        wait_for(|| starts.load(Ordering::SeqCst) == 2).await;
        assert_eq!(
            addr.send(Do::Count).await.unwrap(),
            1,
            "the same address reaches the restarted, reset actor"
        );
        addr.send(Do::Stop).await.unwrap();
        wait_for(|| starts.load(Ordering::SeqCst) == 3).await;
        assert_eq!(addr.send(Do::Count).await.unwrap(), 1);
        let exits = recorder.send(Exits).await.unwrap();
        assert_eq!(
            exits,
            [
                ("flaky".into(), Exit::Panicked("asked to panic".into())),
                ("flaky".into(), Exit::Stopped)
            ]
        );
        // Budget spent: the third exit is the last; the mailbox closes.
        let _ = addr.send(Do::Panic).await;
        wait_for(|| !addr.connected()).await;
        assert!(addr.send(Do::Count).await.is_err());
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }

    #[actix_rt::test]
    async fn a_task_is_rebuilt_after_a_panic_or_an_error_until_told_no() {
        let recorder = Recorder {
            exits: Vec::new(),
            budget: 2,
        }
        .start();
        let watch = Watch {
            child: ChildId::new(ChildKind::QueueWorker, "task"),
            supervisor: recorder.clone().recipient(),
        };
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let arbiter = Arbiter::new();
        supervise_task(&arbiter.handle(), watch, move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => panic!("first run panics"),
                    1 => Err("second run fails".to_string()),
                    _ => Ok(()),
                }
            }
        });
        wait_for(|| runs.load(Ordering::SeqCst) == 3).await;
        let mut exits = Vec::new();
        for _ in 0..500 {
            exits = recorder.send(Exits).await.unwrap();
            if exits.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            exits.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
            [
                Exit::Panicked("first run panics".into()),
                Exit::Failed("second run fails".into()),
                Exit::Stopped
            ]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "told no: not run again");
        arbiter.stop();
    }
}
