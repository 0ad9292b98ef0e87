//! StorageActor: stores received messages with group commit (SPEC M4).
//!
//! Messages that arrive while a batch is being committed wait and form the next batch.
//! One batch = its objects written in parallel, one `sync` of the object store (one
//! `syncfs` on fs), then one database transaction for all rows. Each caller gets its
//! answer only after that transaction committed, so a 250 always means "durable".
//! A failure answers every caller of the batch with [`StoreError`] (451 upstream) and
//! tells the HealthMonitor.

use std::sync::Arc;

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

/// Store this message durably; answers once it is (or is not).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct StoreMessage(pub IncomingMessage);

type Waiter = (IncomingMessage, oneshot::Sender<Result<(), StoreError>>);

pub struct StorageActor {
    db: DatabaseConnection,
    bodies: BodyStore,
    health: Arc<HealthState>,
    health_monitor: Recipient<DependencyFailed>,
    pending: Vec<Waiter>,
    committing: bool,
    /// Upper bound of messages per transaction, to bound latency and memory.
    max_batch: usize,
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
            committing: false,
            max_batch: 256,
        }
    }

    fn commit_next(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.pending.is_empty() {
            return;
        }
        self.committing = true;
        let take = self.pending.len().min(self.max_batch);
        let batch: Vec<Waiter> = self.pending.drain(..take).collect();
        let (db, bodies) = (self.db.clone(), self.bodies.clone());
        let fut = async move {
            let (messages, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let result = commit_batch(&db, &bodies, &messages).await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
            result
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.committing = false;
            if let Err(e) = result {
                let dependency = match e {
                    StoreError::Database(_) => Dependency::Database,
                    _ => Dependency::Storage,
                };
                tracing::error!(component = "storage", event = "store_failed", error = %e, "batch not stored");
                act.health.mark_down(dependency);
                act.health_monitor.do_send(DependencyFailed(dependency));
            }
            act.commit_next(ctx);
        }));
    }
}

async fn commit_batch(
    db: &DatabaseConnection,
    bodies: &BodyStore,
    messages: &[IncomingMessage],
) -> Result<(), StoreError> {
    let puts = messages
        .iter()
        .map(|m| bodies.put_keyed(m.object_key(), m.body.clone()));
    for result in futures::future::join_all(puts).await {
        result.map_err(|e| StoreError::Storage(e.to_string()))?;
    }
    bodies
        .sync()
        .await
        .map_err(|e| StoreError::Storage(e.to_string()))?;
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
        for (_, waiter) in self.pending.drain(..) {
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
        self.commit_next(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Stopped)) })
    }
}
