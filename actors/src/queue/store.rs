//! The queue's tables as workers use them: claim with a lease, renew it, and record the
//! outcome of an attempt. Entries are written by the StorageActor's row transaction
//! (`storage::rows`), with the message they carry. The database is the only place queue
//! state lives: a worker holds nothing a crash could lose. The operator's reads and
//! edits are in [`super::admin`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use mairust_entities::{message, queue_entry, queue_history, queue_recipient, unflushed_message};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

use super::attempt::{ClaimedEntry, ClaimedRecipient, EntryResult, Outcome};

/// Recipient status values (entries start `pending`, written by the StorageActor).
pub use crate::storage::rows::PENDING;
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// Bind-parameter budget per statement, well under SQLite's limit.
pub(super) const CHUNK: usize = 200;

pub(super) fn ts(t: DateTime<Utc>) -> DateTime<FixedOffset> {
    t.fixed_offset()
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Inserts rows a few at a time, so a statement stays within [`CHUNK`] bind parameters
/// (each of these rows binds about ten).
pub(super) async fn insert_chunked<C, A>(txn: &C, rows: Vec<A>) -> Result<(), DbErr>
where
    C: ConnectionTrait,
    A: ActiveModelTrait + Clone,
{
    crate::database::insert_in_chunks(txn, rows, CHUNK / 10).await
}

/// Claims up to `limit` due entries for `owner` until `now + lease`. On PostgreSQL the
/// candidates are locked with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on any
/// node never take the same entry; SQLite serialises writers. An entry whose lease ran
/// out (its node died) is due again.
pub async fn claim(
    db: &DatabaseConnection,
    owner: &str,
    limit: usize,
    lease: Duration,
) -> Result<Vec<ClaimedEntry>, DbErr> {
    let now = Utc::now();
    let txn = db.begin().await?;
    let due = Query::select()
        .column(queue_entry::Column::Id)
        .from(queue_entry::Entity)
        .and_where(queue_entry::Column::NextAttemptAt.lte(ts(now)))
        .cond_where(
            sea_orm::Condition::any()
                .add(queue_entry::Column::LeaseUntil.is_null())
                .add(Expr::col(queue_entry::Column::LeaseUntil).lt(lease_now(db))),
        )
        // A journalled message's body may still fail (SQLite's parallel commit, see
        // storage::actor): its sender could get 451 after a delivery started.
        .and_where(
            Expr::col(queue_entry::Column::MessageId).not_in_subquery(
                Query::select()
                    .column(unflushed_message::Column::MessageId)
                    .from(unflushed_message::Entity)
                    .to_owned(),
            ),
        )
        .order_by(queue_entry::Column::NextAttemptAt, sea_orm::Order::Asc)
        .limit(limit as u64)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    let update = Query::update()
        .table(queue_entry::Entity)
        .values([
            (queue_entry::Column::LeaseOwner, owner.into()),
            (queue_entry::Column::LeaseUntil, lease_until(db, lease)),
        ])
        .and_where(Expr::col(queue_entry::Column::Id).in_subquery(due))
        .returning_col(queue_entry::Column::Id)
        .to_owned();
    let ids: Vec<String> = txn
        .query_all(&update)
        .await?
        .iter()
        .map(|row| row.try_get::<String>("", "id"))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        txn.commit().await?;
        return Ok(Vec::new());
    }
    let entries = queue_entry::Entity::find()
        .filter(queue_entry::Column::Id.is_in(ids.clone()))
        .order_by_asc(queue_entry::Column::NextAttemptAt)
        .all(&txn)
        .await?;
    let keys: HashMap<String, (String, i64)> = message::Entity::find()
        .select_only()
        .column(message::Column::Id)
        .column(message::Column::ObjectKey)
        .column(message::Column::Size)
        .filter(message::Column::Id.is_in(entries.iter().map(|e| e.message_id.clone())))
        .into_tuple::<(String, String, i64)>()
        .all(&txn)
        .await?
        .into_iter()
        .map(|(id, key, size)| (id, (key, size)))
        .collect();
    let mut recipients: HashMap<String, Vec<ClaimedRecipient>> = HashMap::new();
    for r in queue_recipient::Entity::find()
        .filter(queue_recipient::Column::EntryId.is_in(ids))
        .filter(queue_recipient::Column::Status.eq(PENDING))
        .order_by_asc(queue_recipient::Column::Id)
        .all(&txn)
        .await?
    {
        recipients
            .entry(r.entry_id)
            .or_default()
            .push(ClaimedRecipient {
                id: r.id,
                address: r.address,
                domain: r.domain,
            });
    }
    txn.commit().await?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let (object_key, size) = keys.get(&e.message_id).cloned().unwrap_or_default();
            ClaimedEntry {
                object_key,
                size: u64::try_from(size).unwrap_or(0),
                recipients: recipients.remove(&e.id).unwrap_or_default(),
                id: e.id,
                message_id: e.message_id,
                envelope_from: e.envelope_from,
                created_at: e.created_at.to_utc(),
                expires_at: e.expires_at.to_utc(),
                attempts: e.attempts,
            }
        })
        .collect())
}

/// Extends the lease of entries this owner still holds (a long batch); returns how
/// many it still holds.
pub async fn renew(
    db: &DatabaseConnection,
    owner: &str,
    ids: &[String],
    lease: Duration,
) -> Result<usize, DbErr> {
    let until = lease_until(db, lease);
    let mut held = 0;
    for chunk in ids.chunks(CHUNK) {
        held += queue_entry::Entity::update_many()
            .col_expr(queue_entry::Column::LeaseUntil, until.clone())
            .filter(queue_entry::Column::Id.is_in(chunk.to_vec()))
            .filter(queue_entry::Column::LeaseOwner.eq(owner))
            .exec(db)
            .await?
            .rows_affected as usize;
    }
    Ok(held)
}

/// "Now" for lease comparisons: on PostgreSQL the database's clock, which every node
/// shares, so a node whose own clock runs ahead cannot take live leases; on SQLite (one
/// node) the local clock, in the same text form as the stored values.
fn lease_now(db: &DatabaseConnection) -> sea_orm::sea_query::SimpleExpr {
    match db.get_database_backend() {
        DbBackend::Postgres => Expr::current_timestamp(),
        _ => Expr::value(ts(Utc::now())),
    }
}

/// `now + lease` on the same clock as [`lease_now`].
fn lease_until(db: &DatabaseConnection, lease: Duration) -> sea_orm::sea_query::SimpleExpr {
    match db.get_database_backend() {
        DbBackend::Postgres => Expr::cust(format!(
            "CURRENT_TIMESTAMP + INTERVAL '{} milliseconds'",
            lease.as_millis()
        )),
        _ => Expr::value(ts(after(Utc::now(), lease))),
    }
}

/// Records a batch of attempts in one transaction and returns the object keys that no
/// row needs any more (finished outbound-only messages); the caller deletes them after
/// the commit. Entries whose recipients are all final are removed from the live tables;
/// the history keeps every attempt. Only entries this owner still holds are touched
/// (each write is conditional on the lease, and the rest follows from what matched),
/// so a worker that lost its lease cannot overwrite the new owner's work.
pub async fn record(
    db: &DatabaseConnection,
    owner: &str,
    node_id: &str,
    results: &[EntryResult],
    retry: &crate::config::RetryConfig,
) -> Result<Vec<String>, DbErr> {
    let now = Utc::now();
    let (finished, open): (Vec<&EntryResult>, Vec<&EntryResult>) = results
        .iter()
        .partition(|e| e.recipients.iter().all(|r| r.outcome.is_final()));

    let txn = db.begin().await?;
    // Writes first: on SQLite the transaction then holds the write lock from the start.
    let mut held: HashSet<String> = HashSet::new();
    let finished_ids: Vec<String> = finished.iter().map(|e| e.entry.id.clone()).collect();
    for chunk in finished_ids.chunks(CHUNK) {
        let delete = Query::delete()
            .from_table(queue_entry::Entity)
            .and_where(queue_entry::Column::Id.is_in(chunk.to_vec()))
            .and_where(queue_entry::Column::LeaseOwner.eq(owner))
            .returning_col(queue_entry::Column::Id)
            .to_owned();
        for row in txn.query_all(&delete).await? {
            held.insert(row.try_get::<String>("", "id")?);
        }
    }
    for e in open {
        let attempted = e.recipients.iter().any(|r| r.outcome != Outcome::Released);
        let attempts = e.entry.attempts + i32::from(attempted);
        let deferred = e
            .recipients
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Deferred { .. }));
        let next = if deferred {
            after(now, retry.delay(Ord::max(attempts, 1) as u32))
        } else {
            now
        };
        let matched = queue_entry::Entity::update_many()
            .col_expr(queue_entry::Column::Attempts, Expr::value(attempts))
            .col_expr(queue_entry::Column::NextAttemptAt, Expr::value(ts(next)))
            .col_expr(
                queue_entry::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                queue_entry::Column::LeaseUntil,
                Expr::value(Option::<DateTime<FixedOffset>>::None),
            )
            .filter(queue_entry::Column::Id.eq(e.entry.id.clone()))
            .filter(queue_entry::Column::LeaseOwner.eq(owner))
            .exec(&txn)
            .await?
            .rows_affected;
        if matched == 0 {
            continue;
        }
        held.insert(e.entry.id.clone());
        for r in e
            .recipients
            .iter()
            .filter(|r| r.outcome != Outcome::Released)
        {
            let status = match r.outcome {
                Outcome::Delivered { .. } => DELIVERED,
                Outcome::Failed { .. } => FAILED,
                _ => PENDING,
            };
            queue_recipient::Entity::update_many()
                .col_expr(queue_recipient::Column::Status, Expr::value(status))
                .col_expr(
                    queue_recipient::Column::Attempts,
                    Expr::col(queue_recipient::Column::Attempts).add(1),
                )
                .col_expr(
                    queue_recipient::Column::LastReply,
                    Expr::value(r.outcome.reply().map(ToString::to_string)),
                )
                .col_expr(
                    queue_recipient::Column::NextAttemptAt,
                    Expr::value(ts(next)),
                )
                .col_expr(queue_recipient::Column::UpdatedAt, Expr::value(ts(now)))
                .filter(queue_recipient::Column::Id.eq(r.recipient.id))
                .exec(&txn)
                .await?;
        }
    }
    let history: Vec<queue_history::ActiveModel> = results
        .iter()
        .filter(|e| held.contains(&e.entry.id))
        .flat_map(|e| {
            e.recipients.iter().filter_map(|r| {
                let about = HistoryOf {
                    entry_id: &e.entry.id,
                    message_id: &e.entry.message_id,
                    envelope_from: &e.entry.envelope_from,
                    attempt: e.entry.attempts + 1,
                    node_id,
                    at: ts(now),
                };
                Some(about.row(
                    &r.recipient.address,
                    r.outcome.history_name()?,
                    r.outcome.reply().map(ToString::to_string),
                    r.remote_host.as_deref(),
                ))
            })
        })
        .collect();
    insert_chunked(&txn, history).await?;
    let message_ids: Vec<String> = finished
        .iter()
        .filter(|e| held.contains(&e.entry.id))
        .map(|e| e.entry.message_id.clone())
        .collect();
    let keys = drop_unreferenced_messages(&txn, &message_ids).await?;
    txn.commit().await?;
    if held.len() < results.len() {
        tracing::warn!(
            component = "queue",
            lost = results.len() - held.len(),
            "outcomes of entries whose lease was lost were not recorded"
        );
    }
    Ok(keys)
}

/// Deletes the `messages` rows among `ids` that no mailbox and no queue entry uses any
/// more ([`crate::retention::drop_unreferenced`]), and returns their object keys.
pub(super) async fn drop_unreferenced_messages<C: ConnectionTrait>(
    txn: &C,
    ids: &[String],
) -> Result<Vec<String>, DbErr> {
    Ok(crate::retention::drop_unreferenced(txn, ids)
        .await?
        .into_iter()
        .map(|m| m.object_key)
        .collect())
}

/// The entry a history row is about, and when and where it was written.
pub(super) struct HistoryOf<'a> {
    pub entry_id: &'a str,
    pub message_id: &'a str,
    pub envelope_from: &'a str,
    pub attempt: i32,
    pub node_id: &'a str,
    pub at: DateTime<FixedOffset>,
}

impl HistoryOf<'_> {
    /// One history row; `outcome` is one of the names in [`super::attempt`].
    pub fn row(
        &self,
        recipient: &str,
        outcome: &str,
        reply: Option<String>,
        remote_host: Option<&str>,
    ) -> queue_history::ActiveModel {
        queue_history::ActiveModel {
            entry_id: Set(self.entry_id.to_string()),
            message_id: Set(self.message_id.to_string()),
            envelope_from: Set(self.envelope_from.to_string()),
            recipient: Set(recipient.to_string()),
            outcome: Set(outcome.to_string()),
            attempt: Set(self.attempt),
            reply: Set(reply),
            remote_host: Set(remote_host.map(str::to_string)),
            node_id: Set(self.node_id.to_string()),
            at: Set(self.at),
            ..Default::default()
        }
    }
}
