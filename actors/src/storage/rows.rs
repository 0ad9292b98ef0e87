//! The row lane's transaction: a batch of received messages becomes its message rows,
//! mailbox entries and, for remote recipients, queue entries, all committed together so
//! 250 means stored and queued (SPEC M4, M6); Parallel mode journals the batch in
//! `unflushed_messages` and carries the chores of earlier batches (deletions, journal
//! clears). The queue (`queue::store`) takes its entries from there. The statements are
//! built once for either backend; SQLite's run on its writer thread ([`SqliteWriter`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use mairust_entities::{mailbox_message, message, queue_entry, queue_recipient, unflushed_message};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryTrait, Set, Statement, TransactionTrait,
};

use super::envelope::IncomingMessage;
use super::error::RowFailure;
use super::sqlite_writer::SqliteWriter;

/// The status a queue recipient starts in; the queue moves it on to delivered or
/// failed (`queue::store`).
pub const PENDING: &str = "pending";

/// Queue rows per INSERT: about ten bind parameters each, well under SQLite's limit.
const QUEUE_ROWS_PER_INSERT: usize = 20;

/// What a row transaction does besides inserting its batch (Parallel mode).
#[derive(Default)]
pub(super) struct RowChores {
    /// Messages whose object failed: rows deleted, callers answered after the commit.
    pub(super) delete: Vec<(u64, String)>,
    /// Messages through both lanes: journal entries cleared, and whether any has
    /// outbound recipients (the queue skips journalled messages).
    pub(super) clear: Vec<String>,
    pub(super) clear_outbound: bool,
}

impl RowChores {
    pub(super) fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.clear.is_empty()
    }
}

/// Where row transactions run.
#[derive(Clone)]
pub(super) enum RowWriter {
    /// A transaction of the pool per batch: PostgreSQL, and SQLite in memory.
    Pool(DatabaseConnection),
    /// SQLite in a file: its writer thread (see [`SqliteWriter`]).
    Sqlite(SqliteWriter),
}

impl RowWriter {
    /// The writer for `db`: SQLite's writer thread when `db` is a SQLite file.
    pub(super) fn for_database(db: &DatabaseConnection) -> RowWriter {
        if let Some(path) = crate::sqlite::file_of(db) {
            match SqliteWriter::spawn(path) {
                Ok(writer) => return RowWriter::Sqlite(writer),
                Err(e) => {
                    tracing::warn!(component = "storage", error = %e, "could not start the SQLite writer thread; rows go through the pool")
                }
            }
        }
        RowWriter::Pool(db.clone())
    }

    fn backend(&self) -> DbBackend {
        match self {
            RowWriter::Pool(db) => db.get_database_backend(),
            RowWriter::Sqlite(_) => DbBackend::Sqlite,
        }
    }
}

/// One row transaction: the batch's rows and queue entries (journalled in Parallel
/// mode), the rows of messages whose object failed deleted, journal entries cleared.
pub(super) async fn commit_batch(
    writer: &RowWriter,
    messages: &[&IncomingMessage],
    chores: &RowChores,
    journal: bool,
    max_age: Duration,
) -> Result<(), RowFailure> {
    let statements = batch_statements(writer.backend(), messages, chores, journal, max_age);
    match writer {
        RowWriter::Sqlite(writer) => writer.transaction(statements).await,
        RowWriter::Pool(db) => {
            let db_err = RowFailure::Before;
            let txn = db.begin().await.map_err(db_err)?;
            for statement in statements {
                txn.execute_raw(statement).await.map_err(db_err)?;
            }
            txn.commit().await.map_err(RowFailure::Commit)
        }
    }
}

/// The statements of one row transaction, in order.
fn batch_statements(
    backend: DbBackend,
    messages: &[&IncomingMessage],
    chores: &RowChores,
    journal: bool,
    max_age: Duration,
) -> Vec<Statement> {
    let now = Utc::now();
    let mut statements = Vec::new();
    // Chunked: SQLite allows a bounded number of bind parameters per statement.
    for chunk in chores.delete.chunks(per_statement(backend, 128)) {
        let ids: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
        statements.push(
            message::Entity::delete_many()
                .filter(message::Column::Id.is_in(ids.clone()))
                .build(backend),
        );
        statements.push(
            unflushed_message::Entity::delete_many()
                .filter(unflushed_message::Column::MessageId.is_in(ids))
                .build(backend),
        );
    }
    for chunk in chores.clear.chunks(per_statement(backend, 128)) {
        statements.push(
            unflushed_message::Entity::delete_many()
                .filter(unflushed_message::Column::MessageId.is_in(chunk.to_vec()))
                .build(backend),
        );
    }
    if !messages.is_empty() {
        insert_rows(&mut statements, backend, messages, journal, max_age, now);
    }
    statements
}

/// Rows (or ids) per statement, at most `most`: one on SQLite, where the writer thread
/// runs each statement from its cache of prepared statements (one text per statement
/// kind, where multi-row statements would have a text per row count to parse); up to
/// `most` elsewhere, saving round trips to the server.
fn per_statement(backend: DbBackend, most: usize) -> usize {
    if backend == DbBackend::Sqlite {
        1
    } else {
        most
    }
}

/// INSERTs of `rows`, `per_statement` at a time (within the backends' bind-parameter
/// limits, SQLite's being the lowest).
fn inserts<A>(
    statements: &mut Vec<Statement>,
    backend: DbBackend,
    rows: Vec<A>,
    per_statement: usize,
) where
    A: sea_orm::ActiveModelTrait + Clone,
{
    for chunk in rows.chunks(self::per_statement(backend, per_statement)) {
        statements.push(<A::Entity as EntityTrait>::insert_many(chunk.to_vec()).build(backend));
    }
}

fn insert_rows(
    statements: &mut Vec<Statement>,
    backend: DbBackend,
    messages: &[&IncomingMessage],
    journal: bool,
    max_age: Duration,
    now: DateTime<Utc>,
) {
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
            authentication: Set(m.authentication.clone()),
            spam: Set(m.spam.clone()),
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
        inserts(statements, backend, entries, 128);
    }
    inserts(statements, backend, rows, 64);
    inserts(statements, backend, index, 128);
    enqueue(statements, backend, messages, max_age, now);
}

/// Rows for messages with remote recipients; run inside the StorageActor's transaction
/// so 250 means the queue entry is committed with the message (SPEC M4, M6).
fn enqueue(
    statements: &mut Vec<Statement>,
    backend: DbBackend,
    messages: &[&IncomingMessage],
    max_age: Duration,
    now: DateTime<Utc>,
) {
    let queued: Vec<&&IncomingMessage> =
        messages.iter().filter(|m| !m.outbound.is_empty()).collect();
    if queued.is_empty() {
        return;
    }
    let expires_at = now + chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    let entries: Vec<queue_entry::ActiveModel> = queued
        .iter()
        .map(|m| queue_entry::ActiveModel {
            id: Set(m.id.clone()),
            message_id: Set(m.id.clone()),
            envelope_from: Set(m.envelope_from.clone()),
            created_at: Set(now.into()),
            expires_at: Set(expires_at.into()),
            next_attempt_at: Set(now.into()),
            attempts: Set(0),
            lease_owner: Set(None),
            lease_until: Set(None),
        })
        .collect();
    let recipients: Vec<queue_recipient::ActiveModel> = queued
        .iter()
        .flat_map(|m| {
            m.outbound.iter().map(|a| queue_recipient::ActiveModel {
                entry_id: Set(m.id.clone()),
                address: Set(a.to_string()),
                domain: Set(a.domain.clone()),
                status: Set(PENDING.into()),
                attempts: Set(0),
                next_attempt_at: Set(now.into()),
                last_reply: Set(None),
                updated_at: Set(now.into()),
                ..Default::default()
            })
        })
        .collect();
    inserts(statements, backend, entries, QUEUE_ROWS_PER_INSERT);
    inserts(statements, backend, recipients, QUEUE_ROWS_PER_INSERT);
}
