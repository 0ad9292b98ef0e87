//! Durable storage of received mail (SPEC M4, M5).
//!
//! - [`bodies`] — message bodies as objects (fs or S3)
//! - [`envelope`] — what the StorageActor is asked to store, parsed headers included
//! - [`error`] — [`StoreError`]: why a message was not stored
//! - [`actor`] — the StorageActor and its group commit
//! - [`rows`] — the row lane's transaction: message rows, mailbox and queue entries
//! - [`sqlite_writer`] — SQLite's row writer thread
//! - [`recovery`] — at start, rows a dead node committed ahead of their body
//! - [`identity`] — the marker tying the object store to its database

pub mod actor;
pub mod bodies;
pub mod envelope;
pub mod error;
pub mod identity;
pub mod recovery;
pub mod rows;
mod sqlite_writer;

pub use actor::{CommitMode, QueueHook, StorageActor, StoreMessage};
pub use bodies::BodyStore;
pub use envelope::{IncomingMessage, MessageMeta, digest};
pub use error::StoreError;
pub use recovery::recover_unflushed;

/// Bytes of all stored message bodies, from the database (`mairust_storage_bytes`).
pub async fn stored_bytes(db: &sea_orm::DatabaseConnection) -> Result<u64, sea_orm::DbErr> {
    use sea_orm::{EntityTrait, QuerySelect, sea_query::Expr};
    // CAST: PostgreSQL sums bigint into numeric.
    let total: Option<i64> = mairust_entities::message::Entity::find()
        .select_only()
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(size), 0) AS BIGINT)"),
            "total",
        )
        .into_tuple()
        .one(db)
        .await?;
    Ok(total.unwrap_or(0).max(0) as u64)
}
