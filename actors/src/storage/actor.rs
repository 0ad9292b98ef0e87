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
//!   once, so its latency is the slower flush, not the sum of both. A crash between the
//!   two flushes can leave a row without its object, but only for a message that was
//!   never acknowledged; [`recover_unflushed`] removes such rows before the next start
//!   accepts mail, and a failed object write removes its rows at once.
//!
//! Messages with remote recipients get their queue rows in the same transaction, so
//! 250 means queued (SPEC M6); once through both lanes they wake this node's
//! QueueWorkers.
//!
//! A failure answers the callers of that batch with [`StoreError`] (451 upstream) and
//! tells the HealthMonitor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chrono::Utc;
use mairust_entities::{mailbox_message, message};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};
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

type Entry = (u64, Arc<IncomingMessage>);

/// A caller waiting for its message to pass both lanes.
struct Waiter {
    reply: oneshot::Sender<Result<(), StoreError>>,
    object_done: bool,
    rows_done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Objects,
    Rows,
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
    /// durable. Bounded by `MAX_BATCH`, so at most two batches of rows can ever be
    /// ahead of their objects, which is what [`recover_unflushed`] relies on.
    rows_ahead: usize,
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
            if result.is_err() && act.mode == CommitMode::Parallel {
                act.remove_rows(&batch, ctx);
            }
            if result.is_ok() && act.mode == CommitMode::Ordered {
                act.row_queue.extend(batch.iter().cloned());
            }
            act.lane_done(Lane::Objects, &batch, result);
            act.start_lanes(ctx);
        }));
    }

    fn commit_rows(&mut self, ctx: &mut Context<Self>) {
        if self.committing_rows || self.row_queue.is_empty() || self.rows_ahead >= MAX_BATCH {
            return;
        }
        self.committing_rows = true;
        let take = self.row_queue.len().min(MAX_BATCH);
        let batch: Vec<Entry> = self.row_queue.drain(..take).collect();
        let db = self.db.clone();
        let queue = self.queue.clone();
        let n = batch.len();
        let spans = self.child_spans(
            &batch,
            |parent| tracing::info_span!(parent: parent, "db.commit", batch = n),
        );
        let fut = async move {
            let started = Instant::now();
            let messages: Vec<&IncomingMessage> = batch.iter().map(|(_, m)| m.as_ref()).collect();
            let result = insert_rows(&db, &messages, queue.max_age).await;
            tracing::debug!(
                component = "storage",
                event = "rows_committed",
                messages = batch.len(),
                us = started.elapsed().as_micros() as u64,
                ok = result.is_ok(),
                "rows committed"
            );
            drop(spans);
            (batch, result)
        };
        ctx.spawn(fut.into_actor(self).map(|(batch, result), act, ctx| {
            act.committing_rows = false;
            if result.is_err() {
                // Their callers get 451: objects not written yet need not be.
                act.object_queue
                    .retain(|(seq, _)| !batch.iter().any(|(s, _)| s == seq));
            }
            act.lane_done(Lane::Rows, &batch, result);
            act.start_lanes(ctx);
        }));
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
    fn lane_done(&mut self, lane: Lane, batch: &[Entry], result: Result<(), StoreError>) {
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
            let was_ahead = waiter.rows_done && !waiter.object_done;
            if result.is_ok() {
                match lane {
                    Lane::Objects => waiter.object_done = true,
                    Lane::Rows => waiter.rows_done = true,
                }
            }
            let is_ahead = waiter.rows_done && !waiter.object_done;
            let finished = result.is_err() || (waiter.rows_done && waiter.object_done);
            match (was_ahead, is_ahead && !finished) {
                (false, true) => self.rows_ahead += 1,
                (true, false) => self.rows_ahead -= 1,
                _ => {}
            }
            if finished && let Some(waiter) = self.waiters.remove(seq) {
                self.spans.remove(seq);
                queued |= result.is_ok() && !message.outbound.is_empty();
                let _ = waiter.reply.send(result.clone());
            }
        }
        // New queue entries whose body and rows are both durable: deliver them now.
        if queued {
            self.queue.wakeup.notify_waiters();
        }
    }

    /// Parallel mode, objects failed: their rows (committed or about to be) must go.
    fn remove_rows(&mut self, batch: &[Entry], ctx: &mut Context<Self>) {
        // Rows not committed yet: take them out of the queue.
        self.row_queue
            .retain(|(seq, _)| !batch.iter().any(|(s, _)| s == seq));
        let ids: Vec<String> = batch.iter().map(|(_, m)| m.id.clone()).collect();
        let db = self.db.clone();
        ctx.spawn(
            async move {
                if let Err(e) = message::Entity::delete_many()
                    .filter(message::Column::Id.is_in(ids))
                    .exec(&db)
                    .await
                {
                    tracing::warn!(component = "storage", error = %e, "could not remove rows of unstored objects; recover_unflushed removes them at the next start");
                }
            }
            .into_actor(self),
        );
    }
}

async fn insert_rows(
    db: &DatabaseConnection,
    messages: &[&IncomingMessage],
    max_age: std::time::Duration,
) -> Result<(), StoreError> {
    let now = Utc::now();
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
    let db_err = |e: sea_orm::DbErr| StoreError::Database(e.to_string());
    let txn = db.begin().await.map_err(db_err)?;
    // Chunked: SQLite allows a bounded number of bind parameters per statement.
    for chunk in rows.chunks(64) {
        message::Entity::insert_many(chunk.to_vec())
            .exec(&txn)
            .await
            .map_err(db_err)?;
    }
    for chunk in index.chunks(128) {
        mailbox_message::Entity::insert_many(chunk.to_vec())
            .exec(&txn)
            .await
            .map_err(db_err)?;
    }
    crate::queue::store::enqueue(&txn, messages, max_age, now)
        .await
        .map_err(db_err)?;
    txn.commit().await.map_err(db_err)
}

/// Parallel mode, before accepting mail: rows among the newest whose object is missing
/// were committed while their object was not flushed when the process died, so they
/// were never acknowledged. Removes them (their mailbox entries go by cascade) and
/// returns how many.
pub async fn recover_unflushed(
    db: &DatabaseConnection,
    bodies: &BodyStore,
) -> Result<usize, StoreError> {
    let db_err = |e: sea_orm::DbErr| StoreError::Database(e.to_string());
    // At most two batches of rows can be ahead of their objects (`rows_ahead`);
    // look well past that.
    let newest = message::Entity::find()
        .order_by_desc(message::Column::ReceivedAt)
        .limit(4 * MAX_BATCH as u64)
        .all(db)
        .await
        .map_err(db_err)?;
    let mut removed = 0;
    for row in newest {
        let present = bodies
            .exists(&row.object_key)
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        if !present {
            message::Entity::delete_by_id(row.id.clone())
                .exec(db)
                .await
                .map_err(db_err)?;
            tracing::warn!(component = "storage", event = "unflushed_row_removed", id = %row.id, "removed the row of a message that was never acknowledged (crash before its object was flushed)");
            removed += 1;
        }
    }
    Ok(removed)
}

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // Callers still waiting get a tempfail rather than silence.
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.reply.send(Err(StoreError::Stopped));
        }
        Running::Stop
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
            },
        );
        self.start_lanes(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Stopped)) })
    }
}
