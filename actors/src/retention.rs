//! Retention (SPEC M7): mailbox entries soft-deleted through the API longer ago than
//! `retention.deleted_messages_days` are purged, and with them every message row that
//! nothing refers to any more (no mailbox entry, deleted or not, and no queue entry) and
//! its body in the object store. The same run removes messages left with no reference at
//! all by removing a user, a domain or a mailbox (their entries go by cascade). The
//! [`crate::janitor`] runs [`purge`] on every node.
//!
//! No work is done twice, and none is lost, however many nodes purge at once:
//! - a batch of entries is claimed and deleted in one statement whose candidates are
//!   locked `FOR UPDATE SKIP LOCKED` on PostgreSQL (SQLite serialises writers): an entry
//!   is deleted, counted and audited by exactly one node;
//! - a message row is locked before its references are counted
//!   ([`drop_unreferenced`], which the queue uses too when it finishes an entry): of two
//!   transactions that each remove one of a message's last two references, the second
//!   waits for the first, then sees its commit and deletes the row, so the row goes
//!   exactly once and is never left behind with no reference;
//! - bodies are deleted only after the transaction that deleted their rows committed: a
//!   crash in between leaves an orphan object (`mairust db check` lists it), never a row
//!   without its body.
//!
//! All this relies on a message never gaining a reference after it is stored: its rows,
//! mailbox entries and queue entry are committed in one transaction. Code that ever adds
//! an entry to an existing message must lock the message row first.
//!
//! A run goes through the tables by id in batches of `retention.purge_batch_size`, each
//! batch its own short transaction, so a large backlog never holds the database for long
//! and no row is read twice in one run.

use chrono::{DateTime, FixedOffset, Utc};
use mairust_entities::{mailbox_message, message, queue_entry};
use sea_orm::sea_query::{
    Condition, DeleteStatement, Expr, ExprTrait, IntoIden, LockBehavior, LockType, Order, Query,
    ReturningClause, SelectStatement,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult,
    TransactionTrait,
};

use crate::storage::BodyStore;

/// Message ids per statement: bind parameters stay well under SQLite's limit.
const CHUNK: usize = 200;

/// A `messages` row deleted because nothing referred to it any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedMessage {
    pub id: String,
    /// Its body, to delete from the object store once the transaction has committed.
    pub object_key: String,
    pub size: i64,
}

/// Deletes the `messages` rows among `ids` that no mailbox entry (deleted or not) and
/// no queue entry refers to, inside the caller's transaction, which has already removed
/// its own references. Returns what was deleted; the caller deletes the bodies after
/// its commit.
///
/// On PostgreSQL the rows are locked first (in id order, so two callers cannot
/// deadlock): a concurrent transaction that removes another reference to the same
/// message holds the lock until it commits, and the count made after the lock sees
/// that commit (READ COMMITTED takes a new snapshot per statement). Without the lock,
/// two transactions could each still see the other's reference and both keep the row.
pub async fn drop_unreferenced<C: ConnectionTrait>(
    txn: &C,
    ids: &[String],
) -> Result<Vec<DroppedMessage>, DbErr> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let mut dropped = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        if txn.get_database_backend() == DbBackend::Postgres {
            let lock = Query::select()
                .column(message::Column::Id)
                .from(message::Entity)
                .and_where(message::Column::Id.is_in(chunk.to_vec()))
                .order_by(message::Column::Id, Order::Asc)
                .lock(LockType::Update)
                .to_owned();
            txn.query_all(&lock).await?;
        }
        let delete = Query::delete()
            .from_table(message::Entity)
            .and_where(message::Column::Id.is_in(chunk.to_vec()))
            .cond_where(unreferenced())
            .returning(dropped_columns())
            .to_owned();
        dropped.extend(dropped_rows(txn.query_all(&delete).await?)?);
    }
    Ok(dropped)
}

/// No mailbox entry (deleted or not) and no queue entry refers to the `messages` row of
/// the statement around it.
fn unreferenced() -> Condition {
    Condition::all()
        .add(Expr::not_exists(references(
            mailbox_message::Entity,
            mailbox_message::Column::MessageId,
        )))
        .add(Expr::not_exists(references(
            queue_entry::Entity,
            queue_entry::Column::MessageId,
        )))
}

/// `SELECT 1 FROM table WHERE table.column = messages.id`: a reference to the message
/// of the statement around it.
fn references<T, C>(table: T, column: C) -> SelectStatement
where
    T: IntoIden + Copy,
    C: IntoIden,
{
    Query::select()
        .expr(Expr::val(1))
        .from(table)
        .and_where(Expr::col((table, column)).equals((message::Entity, message::Column::Id)))
        .to_owned()
}

/// `RETURNING id, object_key, size` of a delete from `messages`, read by
/// [`dropped_rows`].
fn dropped_columns() -> ReturningClause {
    Query::returning().columns([
        message::Column::Id,
        message::Column::ObjectKey,
        message::Column::Size,
    ])
}

/// Deletes up to `limit` rows of `table` that `filter` selects, the lowest `id`s first,
/// skipping rows another transaction has locked (`FOR UPDATE SKIP LOCKED` on
/// PostgreSQL): a row another node is purging right now is deleted there, and neither
/// waits for the other.
fn delete_batch<T, C>(table: T, id: C, filter: Condition, limit: usize) -> DeleteStatement
where
    T: IntoIden + Copy,
    C: IntoIden + Copy,
{
    let candidates = Query::select()
        .column(id)
        .from(table)
        .cond_where(filter)
        .order_by(id, Order::Asc)
        .limit(limit as u64)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    Query::delete()
        .from_table(table)
        .and_where(Expr::col(id).in_subquery(candidates))
        .to_owned()
}

/// The `RETURNING id, object_key, size` rows of a delete from `messages`.
fn dropped_rows(rows: Vec<QueryResult>) -> Result<Vec<DroppedMessage>, DbErr> {
    rows.iter()
        .map(|row| {
            Ok(DroppedMessage {
                id: row.try_get("", "id")?,
                object_key: row.try_get("", "object_key")?,
                size: row.try_get("", "size")?,
            })
        })
        .collect()
}

/// What one purge run did (this node's share only).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    /// Mailbox entries deleted.
    pub entries: u64,
    /// Message rows deleted because their last reference was one of those entries.
    pub messages: u64,
    /// Message rows deleted because nothing referred to them any more when the run
    /// began: their entries went with a removed user, domain or mailbox.
    pub unreferenced: u64,
    /// Size of the deleted messages.
    pub bytes: u64,
    /// Their bodies removed from the object store.
    pub objects_deleted: u64,
    /// Bodies that could not be removed (left as orphans for `db check`).
    pub objects_failed: u64,
    /// Why the run stopped early (the database failed); the counts say what was done.
    pub error: Option<String>,
}

impl PurgeReport {
    /// Whether anything was deleted.
    pub fn purged_any(&self) -> bool {
        self.entries > 0 || self.messages > 0 || self.unreferenced > 0
    }

    /// Counts the dropped messages, then removes their bodies (after the commit).
    async fn bodies_of(&mut self, bodies: &BodyStore, dropped: &[DroppedMessage]) {
        self.bytes += dropped
            .iter()
            .map(|m| u64::try_from(m.size).unwrap_or(0))
            .sum::<u64>();
        let keys: Vec<String> = dropped.iter().map(|m| m.object_key.clone()).collect();
        let failed = bodies.delete_unreferenced(&keys).await as u64;
        self.objects_deleted += keys.len() as u64 - failed;
        self.objects_failed += failed;
    }
}

/// One batch of entries, committed.
struct EntryBatch {
    /// Entries the batch deleted; fewer than asked means none is left to claim.
    entries: u64,
    /// The highest entry id deleted: the next batch starts after it.
    last_id: Option<i64>,
    dropped: Vec<DroppedMessage>,
}

/// Purges the entries deleted before `cutoff`, and the messages and bodies they were
/// the last reference to; then the messages nothing refers to at all. Both go in
/// batches of `batch_size`. Stops at the first database error; the report says what
/// was done until then.
pub async fn purge(
    db: &DatabaseConnection,
    bodies: &BodyStore,
    cutoff: DateTime<Utc>,
    batch_size: usize,
) -> PurgeReport {
    let mut report = PurgeReport::default();
    if let Err(e) = purge_entries(db, bodies, cutoff, batch_size, &mut report).await {
        report.error = Some(e.to_string());
        return report;
    }
    if let Err(e) = purge_unreferenced(db, bodies, cutoff, batch_size, &mut report).await {
        report.error = Some(e.to_string());
    }
    report
}

async fn purge_entries(
    db: &DatabaseConnection,
    bodies: &BodyStore,
    cutoff: DateTime<Utc>,
    batch_size: usize,
    report: &mut PurgeReport,
) -> Result<(), DbErr> {
    let mut after_id = 0;
    loop {
        let batch = entry_batch(db, cutoff.fixed_offset(), after_id, batch_size).await?;
        report.entries += batch.entries;
        report.messages += batch.dropped.len() as u64;
        report.bodies_of(bodies, &batch.dropped).await;
        match batch.last_id {
            Some(last) if batch.entries >= batch_size as u64 => after_id = last,
            _ => return Ok(()),
        }
    }
}

/// Claims and deletes up to `limit` entries deleted before `cutoff` with ids above
/// `after_id`, then the messages nothing refers to any more, in one transaction.
async fn entry_batch(
    db: &DatabaseConnection,
    cutoff: DateTime<FixedOffset>,
    after_id: i64,
    limit: usize,
) -> Result<EntryBatch, DbErr> {
    let txn = db.begin().await?;
    // Entries another node is purging right now are locked: skipped, not waited for.
    // A write first: on SQLite the transaction holds the write lock from here on.
    let delete = delete_batch(
        mailbox_message::Entity,
        mailbox_message::Column::Id,
        Condition::all()
            .add(mailbox_message::Column::DeletedAt.lt(cutoff))
            .add(mailbox_message::Column::Id.gt(after_id)),
        limit,
    )
    .returning(Query::returning().columns([
        mailbox_message::Column::Id,
        mailbox_message::Column::MessageId,
    ]))
    .to_owned();
    let mut last_id = None;
    let mut message_ids = Vec::new();
    let rows = txn.query_all(&delete).await?;
    for row in &rows {
        let id: i64 = row.try_get("", "id")?;
        last_id = Some(last_id.map_or(id, |last| std::cmp::max(last, id)));
        message_ids.push(row.try_get::<String>("", "message_id")?);
    }
    let dropped = drop_unreferenced(&txn, &message_ids).await?;
    txn.commit().await?;
    Ok(EntryBatch {
        entries: rows.len() as u64,
        last_id,
        dropped,
    })
}

/// Deletes, in batches walking the table by id, the messages received before `cutoff`
/// that no mailbox entry and no queue entry refers to: removing a user, a domain or a mailbox takes their
/// entries away (by cascade) but leaves the messages. A message never gains a
/// reference once stored (its rows and its references are committed together), so one
/// found without any stays so. One another node is dropping right now is locked:
/// skipped here, deleted there.
async fn purge_unreferenced(
    db: &DatabaseConnection,
    bodies: &BodyStore,
    cutoff: DateTime<Utc>,
    batch_size: usize,
    report: &mut PurgeReport,
) -> Result<(), DbErr> {
    let mut after_id = String::new();
    loop {
        let unreferenced = Condition::all()
            .add(message::Column::Id.gt(after_id.as_str()))
            // Mail taken away with its mailbox, user or domain keeps the same grace as
            // mail deleted by hand (counted from its arrival).
            .add(message::Column::ReceivedAt.lt(cutoff.fixed_offset()))
            .add(unreferenced());
        let delete = delete_batch(
            message::Entity,
            message::Column::Id,
            unreferenced,
            batch_size,
        )
        .returning(dropped_columns())
        .to_owned();
        let dropped = dropped_rows(db.query_all(&delete).await?)?;
        report.unreferenced += dropped.len() as u64;
        report.bodies_of(bodies, &dropped).await;
        match dropped.iter().map(|m| &m.id).max() {
            Some(last) if dropped.len() >= batch_size => after_id = last.clone(),
            _ => return Ok(()),
        }
    }
}

/// The moment before which deleted entries are purged, `days` before `now`.
pub fn cutoff(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    now.checked_sub_signed(chrono::Duration::days(i64::from(days)))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
