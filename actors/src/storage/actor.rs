//! StorageActor: stores received messages with group commit (SPEC M4).
//!
//! Two stages, each working on one batch at a time, so one batch's database commit
//! overlaps the next batch's object writes:
//!
//! 1. objects: the batch's bodies are written and made durable together (one blocking
//!    task and one `syncfs` on fs; acknowledged PUTs on S3);
//! 2. rows: everything whose objects are durable is inserted in one transaction.
//!
//! Messages arriving while a stage is busy wait and form its next batch. A caller gets
//! its answer only after its rows committed, so 250 always means durable, and a row
//! never refers to an object that is not durable. A failure answers the callers of that
//! batch with [`StoreError`] (451 upstream) and tells the HealthMonitor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use mairust_entities::{mailbox_message, message};
use sea_orm::{DatabaseConnection, EntityTrait, Set, TransactionTrait};
use tokio::sync::oneshot;

use super::bodies::BodyStore;
use super::envelope::IncomingMessage;
use crate::health::{Dependency, DependencyFailed, HealthState};

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

/// Store this message durably; answers once it is (or is not).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct StoreMessage(pub IncomingMessage);

type Waiter = (IncomingMessage, oneshot::Sender<Result<(), StoreError>>);

/// Upper bound of messages per stage batch, to bound latency and memory.
const MAX_BATCH: usize = 256;

pub struct StorageActor {
    db: DatabaseConnection,
    bodies: BodyStore,
    health: Arc<HealthState>,
    health_monitor: Recipient<DependencyFailed>,
    /// Waiting for their objects to be written.
    pending: Vec<Waiter>,
    /// Objects durable, waiting for their rows.
    staged: Vec<Waiter>,
    writing_objects: bool,
    committing_rows: bool,
}

impl StorageActor {
    pub fn new(
        db: DatabaseConnection,
        bodies: BodyStore,
        health: Arc<HealthState>,
        health_monitor: Recipient<DependencyFailed>,
    ) -> Self {
        StorageActor {
            db,
            bodies,
            health,
            health_monitor,
            pending: Vec::new(),
            staged: Vec::new(),
            writing_objects: false,
            committing_rows: false,
        }
    }

    fn write_objects(&mut self, ctx: &mut Context<Self>) {
        if self.writing_objects || self.pending.is_empty() {
            return;
        }
        self.writing_objects = true;
        let take = self.pending.len().min(MAX_BATCH);
        let batch: Vec<Waiter> = self.pending.drain(..take).collect();
        let bodies = self.bodies.clone();
        let fut = async move {
            let objects = batch
                .iter()
                .map(|(m, _)| (m.object_key(), m.body.clone()))
                .collect();
            let result = bodies
                .put_batch(objects)
                .await
                .map_err(|e| StoreError::Storage(e.to_string()));
            (batch, result)
        };
        ctx.spawn(fut.into_actor(self).map(|(batch, result), act, ctx| {
            act.writing_objects = false;
            match result {
                Ok(()) => {
                    act.staged.extend(batch);
                    act.commit_rows(ctx);
                }
                Err(e) => act.fail_batch(batch, &e),
            }
            act.write_objects(ctx);
        }));
    }

    fn commit_rows(&mut self, ctx: &mut Context<Self>) {
        if self.committing_rows || self.staged.is_empty() {
            return;
        }
        self.committing_rows = true;
        let take = self.staged.len().min(MAX_BATCH);
        let batch: Vec<Waiter> = self.staged.drain(..take).collect();
        let db = self.db.clone();
        let fut = async move {
            let started = Instant::now();
            let messages: Vec<&IncomingMessage> = batch.iter().map(|(m, _)| m).collect();
            let result = insert_rows(&db, &messages).await;
            (batch, result, started.elapsed())
        };
        ctx.spawn(fut.into_actor(self).map(
            |(batch, result, took): (Vec<Waiter>, _, Duration), act, ctx| {
                act.committing_rows = false;
                match result {
                    Ok(()) => {
                        tracing::debug!(
                            component = "storage",
                            event = "batch_committed",
                            messages = batch.len(),
                            us = took.as_micros() as u64,
                            "batch committed"
                        );
                        for (_, waiter) in batch {
                            let _ = waiter.send(Ok(()));
                        }
                    }
                    Err(e) => act.fail_batch(batch, &e),
                }
                act.commit_rows(ctx);
            },
        ));
    }

    fn fail_batch(&mut self, batch: Vec<Waiter>, error: &StoreError) {
        tracing::error!(component = "storage", event = "store_failed", error = %error, messages = batch.len(), "batch not stored");
        let dependency = error.dependency();
        self.health.mark_down(dependency);
        self.health_monitor.do_send(DependencyFailed(dependency));
        for (_, waiter) in batch {
            let _ = waiter.send(Err(error.clone()));
        }
    }
}

async fn insert_rows(
    db: &DatabaseConnection,
    messages: &[&IncomingMessage],
) -> Result<(), StoreError> {
    let now = Utc::now();
    let rows: Vec<message::ActiveModel> = messages
        .iter()
        .map(|m| message::ActiveModel {
            id: Set(m.id.clone()),
            object_key: Set(m.object_key()),
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
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>()
                .join(",")),
            listener: Set(m.listener.to_string()),
            remote_ip: Set(m.remote_ip.to_string()),
            received_at: Set(now.into()),
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
                tags: Set(String::new()),
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
    txn.commit().await.map_err(db_err)
}

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // Callers still waiting get a tempfail rather than silence.
        for (_, waiter) in self.pending.drain(..).chain(self.staged.drain(..)) {
            let _ = waiter.send(Err(StoreError::Stopped));
        }
        Running::Stop
    }
}

impl Handler<StoreMessage> for StorageActor {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: StoreMessage, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.pending.push((msg.0, tx));
        self.write_objects(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Stopped)) })
    }
}
