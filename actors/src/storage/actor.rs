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
//!   only for a journalled message, which was never acknowledged: [`recover_unflushed`]
//!   looks at the journal alone, so it never touches an acknowledged message. When an
//!   object batch fails, its messages' rows are never committed (still queued) or are
//!   deleted by a later row transaction, which by the lane's order runs after any commit
//!   of them in flight; their callers get 451 only then. The queue skips journalled
//!   messages, so no delivery starts for a message whose body may fail.
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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use mairust_entities::{mailbox_message, message, unflushed_message};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set, TransactionTrait};
use tokio::sync::oneshot;

use super::bodies::BodyStore;
use super::envelope::IncomingMessage;
use crate::health::{Dependency, DependencyFailed};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("object store unavailable: {0}")]
    Storage(String),
    #[error("database unavailable: {0}")]
    Database(String),
    #[error("storage actor stopped")]
    Stopped,
}

impl StoreError {
    fn dependency(&self) -> Dependency {
        match self {
            StoreError::Database(_) => Dependency::Database,
            _ => Dependency::Storage,
        }
    }
}

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

/// Upper bound of messages per lane batch, to bound latency and memory.
const MAX_BATCH: usize = 256;

/// Parallel mode: how long cleared journal entries may wait for the next row batch to
/// carry them before a transaction of their own does.
const JOURNAL_CLEAR_DELAY: Duration = Duration::from_millis(100);

/// After a failed row transaction carrying deletions or journal clears, the next try
/// waits this long, doubling up to `CHORES_MAX_BACKOFF`: a failing database is not
/// hammered in a loop.
const CHORES_MIN_BACKOFF: Duration = Duration::from_millis(100);
const CHORES_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A caller whose body failed waits for the deletion of its rows at most this long:
/// when the database fails too, it is answered 451 with its rows still journalled
/// (never delivered, removed by a later transaction or the next start).
const DOOMED_ANSWER_WAIT: Duration = Duration::from_secs(30);

type Entry = (u64, Arc<IncomingMessage>);

/// A caller waiting for its message to pass both lanes.
struct Waiter {
    reply: oneshot::Sender<Result<(), StoreError>>,
    object_done: bool,
    rows_done: bool,
    /// Parallel mode: its object failed; it is answered with this error once a row
    /// transaction has deleted its rows (or `DOOMED_ANSWER_WAIT` has passed).
    doomed: Option<(StoreError, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Objects,
    Rows,
}

/// What a row transaction does besides inserting its batch (Parallel mode).
#[derive(Default)]
struct RowChores {
    /// Messages whose object failed: rows deleted, callers answered after the commit.
    delete: Vec<(u64, String)>,
    /// Messages through both lanes: journal entries cleared, and whether any has
    /// outbound recipients (the queue skips journalled messages).
    clear: Vec<String>,
    clear_outbound: bool,
}

impl RowChores {
    fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.clear.is_empty()
    }
}

pub struct StorageActor {
    db: DatabaseConnection,
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
    /// Outbound messages enter the queue in the same row transaction (SPEC M6).
    queue: QueueHook,
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
        StorageActor {
            db,
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
            queue,
        }
    }

    fn start_lanes(&mut self, ctx: &mut Context<Self>) {
        self.write_objects(ctx);
        self.commit_rows(ctx);
    }

    fn write_objects(&mut self, ctx: &mut Context<Self>) {
        if self.writing_objects || self.object_queue.is_empty() {
            return;
        }
        // Supervision tests: the actor panics here, or stops (`return`).
        crate::failpoint::failpoint!("storage_batch", |_| ctx.stop());
        self.writing_objects = true;
        let take = self.object_queue.len().min(MAX_BATCH);
        let batch: Vec<Entry> = self.object_queue.drain(..take).collect();
        let bodies = self.bodies.clone();
        let n = batch.len();
        let spans = self.child_spans(
            &batch,
            |parent| tracing::info_span!(parent: parent, "storage.put_body", batch = n),
        );
        let fut = async move {
            let objects = batch
                .iter()
                .map(|(_, m)| (m.object_key.clone(), m.body.clone()))
                .collect();
            let result = bodies
                .put_batch(objects)
                .await
                .map_err(|e| StoreError::Storage(e.to_string()));
            drop(spans);
            (batch, result)
        };
        ctx.spawn(fut.into_actor(self).map(|(batch, result), act, ctx| {
            act.writing_objects = false;
            if result.is_err() {
                // put_batch removed what it wrote.
                for (seq, _) in &batch {
                    act.drop_objects.remove(seq);
                }
            } else {
                act.delete_dropped_objects(&batch, ctx);
                if act.mode == CommitMode::Ordered {
                    act.row_queue.extend(batch.iter().cloned());
                }
            }
            act.lane_done(Lane::Objects, &batch, result, ctx);
            act.start_lanes(ctx);
        }));
    }

    fn commit_rows(&mut self, ctx: &mut Context<Self>) {
        if self.committing_rows {
            return;
        }
        let take = if self.rows_ahead >= MAX_BATCH {
            0
        } else {
            self.row_queue.len().min(MAX_BATCH)
        };
        let held = self
            .chores_held_until
            .is_some_and(|until| Instant::now() < until);
        let chores_due = !held
            && (!self.chores.delete.is_empty()
                || self.chores.clear_outbound
                || self.chores.clear.len() >= MAX_BATCH
                || (self.clear_due && !self.chores.clear.is_empty()));
        if take == 0 && !chores_due {
            if !held && !self.chores.clear.is_empty() {
                self.arm_clear_timer(ctx);
            }
            return;
        }
        self.committing_rows = true;
        let batch: Vec<Entry> = self.row_queue.drain(..take).collect();
        let chores = if held {
            RowChores::default()
        } else {
            self.clear_due = false;
            std::mem::take(&mut self.chores)
        };
        let db = self.db.clone();
        let queue = self.queue.clone();
        let journal = self.mode == CommitMode::Parallel;
        let n = batch.len();
        let spans = self.child_spans(
            &batch,
            |parent| tracing::info_span!(parent: parent, "db.commit", batch = n),
        );
        let fut = async move {
            let started = Instant::now();
            let messages: Vec<&IncomingMessage> = batch.iter().map(|(_, m)| m.as_ref()).collect();
            let result = commit_batch(&db, &messages, &chores, journal, queue.max_age).await;
            // Only a failed COMMIT may have committed after all.
            let ambiguous = matches!(result, Err(RowFailure::Commit(_)));
            let result = result.map_err(StoreError::from);
            tracing::debug!(
                component = "storage",
                event = "rows_committed",
                messages = batch.len(),
                deleted = chores.delete.len(),
                cleared = chores.clear.len(),
                us = started.elapsed().as_micros() as u64,
                ok = result.is_ok(),
                "rows committed"
            );
            drop(spans);
            (batch, chores, result, ambiguous)
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(|(batch, chores, result, ambiguous), act, ctx| {
                    act.committing_rows = false;
                    act.chores_done(chores, result.is_ok(), ctx);
                    if result.is_err() {
                        // Their callers get 451: objects not written yet need not be,
                        // those written are deleted. Except on PostgreSQL after a failed
                        // COMMIT, which may have committed: the objects stay (at worst
                        // an orphan for `db check`). On SQLite such rows are journalled,
                        // so the next start removes them once their objects are gone.
                        if act.mode == CommitMode::Parallel || !ambiguous {
                            act.drop_written_objects(&batch, ctx);
                        }
                        act.object_queue
                            .retain(|(seq, _)| !batch.iter().any(|(s, _)| s == seq));
                    }
                    act.lane_done(Lane::Rows, &batch, result, ctx);
                    act.start_lanes(ctx);
                }),
        );
    }

    /// A row transaction carried `chores`: answer the doomed callers whose rows it
    /// deleted, or (it failed) keep the work for a later one, after a backoff. A doomed
    /// caller still waiting after `DOOMED_ANSWER_WAIT` is answered anyway.
    fn chores_done(&mut self, chores: RowChores, committed: bool, ctx: &mut Context<Self>) {
        if committed {
            if !chores.is_empty() {
                self.chores_backoff = Duration::ZERO;
                self.chores_held_until = None;
            }
            if chores.clear_outbound {
                self.queue.wakeup.notify_waiters();
            }
        } else if !chores.is_empty() {
            self.chores.clear.extend(chores.clear);
            self.chores.clear_outbound |= chores.clear_outbound;
            self.chores_backoff =
                (self.chores_backoff * 2).clamp(CHORES_MIN_BACKOFF, CHORES_MAX_BACKOFF);
            self.chores_held_until = Some(Instant::now() + self.chores_backoff);
            ctx.run_later(self.chores_backoff, |act, ctx| act.commit_rows(ctx));
        }
        let now = Instant::now();
        for (seq, id) in chores.delete {
            if !committed {
                self.chores.delete.push((seq, id));
            }
            let answer = match self.waiters.get(&seq).and_then(|w| w.doomed.as_ref()) {
                Some((_, answer_by)) => committed || now >= *answer_by,
                None => false,
            };
            if answer {
                let doomed = self.waiters.get_mut(&seq).and_then(|w| w.doomed.take());
                if let Some((error, _)) = doomed {
                    self.answer(seq, Err(error));
                }
            }
        }
    }

    fn arm_clear_timer(&mut self, ctx: &mut Context<Self>) {
        if self.clear_timer {
            return;
        }
        self.clear_timer = true;
        ctx.run_later(JOURNAL_CLEAR_DELAY, |act, ctx| {
            act.clear_timer = false;
            act.clear_due = true;
            act.commit_rows(ctx);
        });
    }

    /// One span per message of a batch, under that message's caller span; they close
    /// when the batch is done (so a trace shows the batch its message waited for).
    fn child_spans(
        &self,
        batch: &[Entry],
        make: impl Fn(&tracing::Span) -> tracing::Span,
    ) -> Vec<tracing::Span> {
        batch
            .iter()
            .filter_map(|(seq, _)| self.spans.get(seq))
            .map(make)
            .collect()
    }

    /// A lane finished a batch: answer the callers that need nothing more.
    fn lane_done(
        &mut self,
        lane: Lane,
        batch: &[Entry],
        result: Result<(), StoreError>,
        ctx: &mut Context<Self>,
    ) {
        if let Err(e) = &result {
            tracing::error!(component = "storage", event = "store_failed", lane = ?lane, error = %e, messages = batch.len(), "batch not stored");
            let dependency = e.dependency();
            self.health_monitor.do_send(DependencyFailed(dependency));
        }
        let mut queued = false;
        for (seq, message) in batch {
            let Some(waiter) = self.waiters.get_mut(seq) else {
                // Already answered: the other lane failed.
                continue;
            };
            if let Err(error) = &result {
                if lane == Lane::Objects && self.mode == CommitMode::Parallel {
                    let queued_rows = self.row_queue.iter().position(|(s, _)| s == seq);
                    if let Some(at) = queued_rows {
                        // Never committed: it just leaves the row queue.
                        self.row_queue.remove(at);
                    } else {
                        // Committed, or in the transaction in flight: a later
                        // transaction deletes its rows, then it is answered.
                        waiter.doomed = Some((error.clone(), Instant::now() + DOOMED_ANSWER_WAIT));
                        self.chores.delete.push((*seq, message.id.clone()));
                        continue;
                    }
                }
                self.answer(*seq, result.clone());
                continue;
            }
            // `rows_ahead` counts the waiters with rows but no object yet.
            match lane {
                Lane::Objects => {
                    if waiter.rows_done {
                        self.rows_ahead -= 1;
                    }
                    waiter.object_done = true;
                }
                Lane::Rows => {
                    if !waiter.object_done {
                        self.rows_ahead += 1;
                    }
                    waiter.rows_done = true;
                }
            }
            if waiter.doomed.is_some() {
                // Its object failed while these rows were in flight.
                continue;
            }
            if waiter.rows_done && waiter.object_done {
                if self.mode == CommitMode::Parallel {
                    self.chores.clear.push(message.id.clone());
                    self.chores.clear_outbound |= !message.outbound.is_empty();
                } else {
                    queued |= !message.outbound.is_empty();
                }
                self.answer(*seq, Ok(()));
            }
        }
        // New queue entries whose body and rows are both durable: deliver them now
        // (Parallel mode: once their journal entries are cleared, see `chores_done`).
        if queued {
            self.queue.wakeup.notify_waiters();
        }
        if !self.chores.is_empty() {
            self.commit_rows(ctx);
        }
    }

    /// Answers a caller and forgets it.
    fn answer(&mut self, seq: u64, result: Result<(), StoreError>) {
        if let Some(waiter) = self.waiters.remove(&seq) {
            if waiter.rows_done && !waiter.object_done {
                self.rows_ahead -= 1;
            }
            self.spans.remove(&seq);
            let _ = waiter.reply.send(result);
        }
    }

    /// Rows failed: objects of the batch already written are deleted now, those being
    /// written once they are.
    fn drop_written_objects(&mut self, batch: &[Entry], ctx: &mut Context<Self>) {
        let mut written = Vec::new();
        for (seq, message) in batch {
            match self.waiters.get(seq) {
                Some(w) if w.object_done => written.push(message.object_key.clone()),
                // Its object failed: nothing was left of it.
                Some(w) if w.doomed.is_some() => {}
                Some(_) if !self.object_queue.iter().any(|(s, _)| s == seq) => {
                    self.drop_objects.insert(*seq);
                }
                _ => {}
            }
        }
        self.delete_objects(written, ctx);
    }

    /// An object batch is written: delete the objects whose rows failed meanwhile.
    fn delete_dropped_objects(&mut self, batch: &[Entry], ctx: &mut Context<Self>) {
        if self.drop_objects.is_empty() {
            return;
        }
        let keys = batch
            .iter()
            .filter(|(seq, _)| self.drop_objects.remove(seq))
            .map(|(_, m)| m.object_key.clone())
            .collect();
        self.delete_objects(keys, ctx);
    }

    fn delete_objects(&mut self, keys: Vec<String>, ctx: &mut Context<Self>) {
        if keys.is_empty() {
            return;
        }
        let bodies = self.bodies.clone();
        ctx.spawn(
            async move {
                bodies.delete_unreferenced(&keys).await;
            }
            .into_actor(self),
        );
    }
}

/// One row transaction: the batch's rows and queue entries (journalled in Parallel
/// mode), the rows of messages whose object failed deleted, journal entries cleared.
/// Why a row transaction failed: before its COMMIT (nothing committed), or at it (it
/// may have committed).
enum RowFailure {
    Before(StoreError),
    Commit(StoreError),
}

impl From<RowFailure> for StoreError {
    fn from(failure: RowFailure) -> StoreError {
        match failure {
            RowFailure::Before(e) | RowFailure::Commit(e) => e,
        }
    }
}

async fn commit_batch(
    db: &DatabaseConnection,
    messages: &[&IncomingMessage],
    chores: &RowChores,
    journal: bool,
    max_age: std::time::Duration,
) -> Result<(), RowFailure> {
    let now = Utc::now();
    let db_err = |e: sea_orm::DbErr| RowFailure::Before(StoreError::Database(e.to_string()));
    let txn = db.begin().await.map_err(db_err)?;
    // Chunked: SQLite allows a bounded number of bind parameters per statement.
    for chunk in chores.delete.chunks(128) {
        let ids: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
        message::Entity::delete_many()
            .filter(message::Column::Id.is_in(ids.clone()))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        unflushed_message::Entity::delete_many()
            .filter(unflushed_message::Column::MessageId.is_in(ids))
            .exec(&txn)
            .await
            .map_err(db_err)?;
    }
    for chunk in chores.clear.chunks(128) {
        unflushed_message::Entity::delete_many()
            .filter(unflushed_message::Column::MessageId.is_in(chunk.to_vec()))
            .exec(&txn)
            .await
            .map_err(db_err)?;
    }
    if !messages.is_empty() {
        insert_rows(&txn, messages, journal, max_age, now)
            .await
            .map_err(db_err)?;
    }
    txn.commit()
        .await
        .map_err(|e| RowFailure::Commit(StoreError::Database(e.to_string())))
}

async fn insert_rows(
    txn: &sea_orm::DatabaseTransaction,
    messages: &[&IncomingMessage],
    journal: bool,
    max_age: std::time::Duration,
    now: chrono::DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let rows: Vec<message::ActiveModel> = messages
        .iter()
        .map(|m| message::ActiveModel {
            id: Set(m.id.clone()),
            object_key: Set(m.object_key.clone()),
            size: Set(m.body.len() as i64),
            sha256: Set(m.sha256.clone()),
            message_id: Set(m.meta.message_id.clone()),
            subject: Set(m.meta.subject.clone()),
            from_addr: Set(m.meta.from.clone()),
            to_addrs: Set(m.meta.to.clone()),
            date: Set(m.meta.date),
            attachments: Set(m.meta.attachments),
            envelope_from: Set(m.envelope_from.clone()),
            envelope_to: Set(m
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .chain(m.outbound.iter().map(|a| a.to_string()))
                .collect::<Vec<_>>()
                .join(",")),
            listener: Set(m.listener.to_string()),
            remote_ip: Set(m.remote_ip.to_string()),
            received_at: Set(now.into()),
            submitted_by: Set(m.submitted_by.clone()),
        })
        .collect();
    let index: Vec<mailbox_message::ActiveModel> = messages
        .iter()
        .flat_map(|m| {
            m.recipients.iter().map(|r| mailbox_message::ActiveModel {
                mailbox_id: Set(r.inbox_id),
                message_id: Set(m.id.clone()),
                user_id: Set(r.user_id),
                flags: Set(String::new()),
                tags: Set(m.tags.join(" ")),
                created_at: Set(now.into()),
                deleted_at: Set(None),
                ..Default::default()
            })
        })
        .collect();
    if journal {
        let entries: Vec<unflushed_message::ActiveModel> = messages
            .iter()
            .map(|m| unflushed_message::ActiveModel {
                message_id: Set(m.id.clone()),
                object_key: Set(m.object_key.clone()),
                created_at: Set(now.into()),
            })
            .collect();
        for chunk in entries.chunks(128) {
            unflushed_message::Entity::insert_many(chunk.to_vec())
                .exec(txn)
                .await?;
        }
    }
    for chunk in rows.chunks(64) {
        message::Entity::insert_many(chunk.to_vec())
            .exec(txn)
            .await?;
    }
    for chunk in index.chunks(128) {
        mailbox_message::Entity::insert_many(chunk.to_vec())
            .exec(txn)
            .await?;
    }
    crate::queue::store::enqueue(txn, messages, max_age, now).await
}

/// Parallel mode, before accepting mail: the journal lists the messages whose rows were
/// committed while their object might not be durable. Those whose object is missing
/// were never acknowledged (a crash, or a failed object batch whose deletion did not
/// commit): their rows go (mailbox and queue entries by cascade). The others were
/// complete; their entries are cleared. Rows not in the journal are never looked at.
/// Returns how many rows were removed.
pub async fn recover_unflushed(
    db: &DatabaseConnection,
    bodies: &BodyStore,
) -> Result<usize, StoreError> {
    let db_err = |e: sea_orm::DbErr| StoreError::Database(e.to_string());
    let journal = unflushed_message::Entity::find()
        .all(db)
        .await
        .map_err(db_err)?;
    let mut lost = Vec::new();
    let mut complete = Vec::new();
    for entry in journal {
        let present = bodies
            .exists(&entry.object_key)
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        if present {
            complete.push(entry.message_id);
        } else {
            tracing::warn!(component = "storage", event = "unflushed_row_removed", id = %entry.message_id, "removed the row of a message that was never acknowledged (its body was not stored)");
            lost.push((0, entry.message_id));
        }
    }
    let removed = lost.len();
    let chores = RowChores {
        delete: lost,
        clear: complete,
        clear_outbound: false,
    };
    if !chores.is_empty() {
        commit_batch(db, &[], &chores, true, Duration::ZERO)
            .await
            .map_err(StoreError::from)?;
    }
    Ok(removed)
}

/// How often temporary body files left by failed writes or kills are swept (fs).
const TEMPORARY_SWEEP: Duration = Duration::from_secs(3600);

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(root) = self.bodies.fs_root() {
            let root = root.to_path_buf();
            ctx.run_interval(TEMPORARY_SWEEP, move |_, _| {
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
    /// next message is taken, so the queue does not skip them for good. (A body write
    /// already handed to a blocking thread may still land after that: an orphan object
    /// for `db check`.)
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.reply.send(Err(StoreError::Stopped));
        }
        *self = StorageActor::new(
            self.db.clone(),
            self.bodies.clone(),
            self.mode,
            self.health_monitor.clone(),
            self.queue.clone(),
        );
        if self.mode == CommitMode::Parallel {
            let (db, bodies) = (self.db.clone(), self.bodies.clone());
            let recover = async move {
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
            ctx.wait(recover.into_actor(self));
        }
    }
}

impl Handler<StoreMessage> for StorageActor {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: StoreMessage, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = (seq, Arc::new(msg.0));
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
