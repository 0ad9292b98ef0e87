//! Durable storage of received mail (SPEC M4, M5).
//!
//! - [`bodies`] — message bodies as objects (fs or S3)
//! - [`envelope`] — what the StorageActor is asked to store, parsed headers included
//! - [`actor`] — the StorageActor and its group commit

pub mod actor;
pub mod bodies;
pub mod envelope;

pub use actor::{CommitMode, QueueHook, StorageActor, StoreError, StoreMessage, recover_unflushed};
pub use bodies::BodyStore;
pub use envelope::{IncomingMessage, MessageMeta};
