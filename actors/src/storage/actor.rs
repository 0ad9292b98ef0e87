//! StorageActor: stores received messages with group commit (SPEC M4).
//!
//! Two lanes, each working on one batch at a time: the object lane writes a batch of
//! bodies and makes them durable together (one blocking task and one `syncfs` on fs;
//! acknowledged PUTs on S3); the row lane inserts a batch of rows in one durable
//! transaction. Messages arriving while a lane is busy wait and form its next batch. A
//! caller is answered only when its message is through both lanes, so 250 always means
//! durable. How the lanes are chained depends on the [`CommitMode`]:
//!
//! - `Ordered` (PostgreSQL, possibly several nodes): a message enters the row lane only
//!   after its object is durable, so a row never points at a missing object.
//! - `Parallel` (SQLite: one node, nothing else writes): a message enters both lanes at
//!   once, so its latency is the slower flush, not the sum of both. Its row transaction
//!   also journals it in `unflushed_messages`; the entry is cleared (in a later row
//!   transaction) once its object is durable. A crash can leave a row without its object
//!   only for a journalled message, which was never acknowledged:
//!   [`super::recover_unflushed`] looks at the journal alone, so it never touches an
//!   acknowledged message. When an object batch fails, its messages' rows are never
//!   committed (still queued) or are deleted by a later row transaction, which by the
//!   lane's order runs after any commit of them in flight; their callers get 451 only
//!   then. The queue skips journalled messages, so no delivery starts for a message
//!   whose body may fail.
//!
//! Messages with remote recipients get their queue rows in the same transaction, so
//! 250 means queued (SPEC M6); once through both lanes they wake this node's
//! QueueWorkers.
//!
//! A failure answers the callers of that batch with [`StoreError`] (451 upstream) and
//! tells the HealthMonitor. A message answered 451 leaves nothing behind: its rows as
//! above, and its object (written before its rows failed) is deleted, except on
//! PostgreSQL when the COMMIT itself failed (it may have committed: the object stays,
//! at worst an orphan for `db check`).
//!
//! Here: the actor, its messages and its state. How batches move through the lanes and
//! callers are answered is in `actor/lanes.rs`; what one row transaction writes in
//! [`super::rows`]; the journal's recovery at start in [`super::recovery`].

mod lanes;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sea_orm::DatabaseConnection;
use tokio::sync::oneshot;

use super::bodies::{BodyStore, Placed};
use super::envelope::IncomingMessage;
use super::error::StoreError;
use super::recovery::recover_unflushed;
use super::rows::{RowChores, RowWriter};
use crate::health_state::DependencyFailed;
use lanes::{Entry, Waiter};

/// How the object and row lanes are chained; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    Ordered,
    Parallel,
}

/// Store this message durably; answers once it is (or is not).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct StoreMessage(pub IncomingMessage, pub tracing::Span);

impl StoreMessage {
    /// A message whose storage spans (`storage.put_body`, `db.commit`) become children
    /// of the caller's current span: its SMTP transaction or API request trace (none
    /// under an untraced transaction).
    pub fn new(message: IncomingMessage) -> Self {
        StoreMessage(message, crate::trace::child_span(tracing::Span::current))
    }
}

pub struct StorageActor {
    db: DatabaseConnection,
    /// Where the row transactions run (SQLite: its writer thread).
    rows: RowWriter,
    bodies: BodyStore,
    mode: CommitMode,
    /// Told of every failure: it marks the dependency down (451 from then on),
    /// logs the transition and probes at once.
    health_monitor: Recipient<DependencyFailed>,
    next_seq: u64,
    waiters: HashMap<u64, Waiter>,
    /// The callers' spans, parents of each message's storage spans.
    spans: HashMap<u64, tracing::Span>,
    object_queue: Vec<Entry>,
    row_queue: Vec<Entry>,
    writing_objects: bool,
    committing_rows: bool,
    /// Parallel mode: messages whose rows are committed but whose object is not yet
    /// durable. Bounded by `MAX_BATCH`, which bounds the journal.
    rows_ahead: usize,
    /// Parallel mode: deletions and journal clears for the next row transaction.
    chores: RowChores,
    /// A row transaction of its own for journal clears is due (the delay passed).
    clear_due: bool,
    clear_timer: bool,
    /// Chores wait until then after a failed transaction (see `CHORES_MIN_BACKOFF`).
    chores_held_until: Option<Instant>,
    chores_backoff: Duration,
    /// Messages whose rows failed while their object was being written: the object is
    /// deleted once written.
    drop_objects: HashSet<u64>,
    /// Parallel mode (fs): the files reserved for bodies not yet handed to the object
    /// lane, whose keys the messages took (a file dropped unwritten is removed).
    placed: HashMap<u64, Placed>,
    /// Outbound messages enter the queue in the same row transaction (SPEC M6).
    queue: QueueHook,
    /// One permit, held by the row transaction in flight (a task of its own, see
    /// `commit_rows`): a restart waits for it before recovering the journal, so a
    /// COMMIT already on its way cannot land after the recovery looked.
    row_gate: Arc<tokio::sync::Semaphore>,
}

/// What the row lane needs to enqueue outbound mail.
#[derive(Clone)]
pub struct QueueHook {
    /// `queue.max_age`: when pending recipients are given up.
    pub max_age: std::time::Duration,
    /// Wakes this node's QueueWorkers when new entries are committed.
    pub wakeup: Arc<tokio::sync::Notify>,
}

impl StorageActor {
    pub fn new(
        db: DatabaseConnection,
        bodies: BodyStore,
        mode: CommitMode,
        health_monitor: Recipient<DependencyFailed>,
        queue: QueueHook,
    ) -> Self {
        let rows = RowWriter::for_database(&db);
        if mode == CommitMode::Parallel {
            // One node writes this store: bodies go into files made at their place.
            bodies.place_spares();
        }
        StorageActor::with_writer(db, rows, bodies, mode, health_monitor, queue)
    }

    fn with_writer(
        db: DatabaseConnection,
        rows: RowWriter,
        bodies: BodyStore,
        mode: CommitMode,
        health_monitor: Recipient<DependencyFailed>,
        queue: QueueHook,
    ) -> Self {
        StorageActor {
            db,
            rows,
            bodies,
            mode,
            health_monitor,
            next_seq: 0,
            waiters: HashMap::new(),
            spans: HashMap::new(),
            object_queue: Vec::new(),
            row_queue: Vec::new(),
            writing_objects: false,
            committing_rows: false,
            rows_ahead: 0,
            chores: RowChores::default(),
            clear_due: false,
            clear_timer: false,
            chores_held_until: None,
            chores_backoff: Duration::ZERO,
            drop_objects: HashSet::new(),
            placed: HashMap::new(),
            queue,
            row_gate: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// How often temporary body files left by failed writes or kills are swept (fs).
const TEMPORARY_SWEEP: Duration = Duration::from_secs(3600);

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(root) = self.bodies.fs_root() {
            let root = root.to_path_buf();
            ctx.run_interval(TEMPORARY_SWEEP, move |act, _| {
                act.bodies.refresh_spares();
                let root = root.clone();
                tokio::task::spawn_blocking(move || {
                    match super::bodies::remove_stale_temporaries(
                        &root,
                        super::bodies::STALE_TEMPORARY,
                    ) {
                        Ok(0) => {}
                        Ok(removed) => tracing::info!(component = "storage", event = "temporaries_removed", removed, "removed stale temporary body files"),
                        Err(e) => tracing::warn!(component = "storage", error = %e, "could not sweep temporary body files"),
                    }
                });
            });
        }
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // Callers still waiting get a tempfail rather than silence.
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.reply.send(Err(StoreError::Stopped));
        }
        Running::Stop
    }
}

/// The Supervisor restarts the actor in place (same address) after a panic or a stop.
impl Supervised for StorageActor {
    /// The batches in flight went with the old context: their callers get 451 and the
    /// lanes start empty. In Parallel mode the rows those batches may have committed are
    /// journalled; they are recovered as at a start ([`recover_unflushed`]) before the
    /// next message is taken, once the row transaction in flight (if any) has ended, so
    /// the queue does not skip them for good. (A body write already handed to a
    /// blocking thread may still land after that: an orphan object for `db check`.)
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.reply.send(Err(StoreError::Stopped));
        }
        let row_gate = self.row_gate.clone();
        *self = StorageActor::with_writer(
            self.db.clone(),
            self.rows.clone(),
            self.bodies.clone(),
            self.mode,
            self.health_monitor.clone(),
            self.queue.clone(),
        );
        self.row_gate = row_gate.clone();
        let recover =
            (self.mode == CommitMode::Parallel).then(|| (self.db.clone(), self.bodies.clone()));
        let restart = async move {
            // The old row transaction ends first, and no new one starts until the
            // recovery is done (the permit is held until then): in either mode no
            // message is taken before.
            let _in_flight_ended = row_gate.acquire_owned().await;
            let Some((db, bodies)) = recover else { return };
            match recover_unflushed(&db, &bodies).await {
                Ok(0) => {}
                Ok(removed) => tracing::warn!(
                    component = "storage",
                    event = "recovered",
                    removed,
                    "removed rows of unacknowledged messages left by the failed storage actor"
                ),
                Err(e) => {
                    tracing::warn!(component = "storage", event = "recovery_failed", error = %e, "could not recover the journal after a restart; the next start does")
                }
            }
        };
        ctx.wait(restart.into_actor(self));
    }
}

impl Handler<StoreMessage> for StorageActor {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: StoreMessage, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut message = msg.0;
        // Parallel mode: the body's file is made already; its name is the object key
        // the rows record.
        if self.mode == CommitMode::Parallel
            && let Some(placed) = self.bodies.take_placed()
        {
            message.object_key = placed.key().to_string();
            self.placed.insert(seq, placed);
        }
        let entry = (seq, Arc::new(message));
        if !msg.1.is_disabled() {
            self.spans.insert(seq, msg.1);
        }
        if self.mode == CommitMode::Parallel {
            self.row_queue.push(entry.clone());
        }
        self.object_queue.push(entry);
        self.waiters.insert(
            seq,
            Waiter {
                reply: tx,
                object_done: false,
                rows_done: false,
                doomed: None,
            },
        );
        self.start_lanes(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Stopped)) })
    }
}
