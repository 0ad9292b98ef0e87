//! The queue's tables: claim with a lease, record the outcome of an attempt, and the
//! operator's reads and edits (`mairust queue ...`). Entries are written by the
//! StorageActor's row transaction (`storage::rows`), with the message they carry. The
//! database is the only place queue state lives: a worker holds nothing a crash could
//! lose.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use mairust_entities::{message, queue_entry, queue_history, queue_recipient, unflushed_message};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde::Serialize;
use utoipa::ToSchema;

/// Recipient status values (entries start `pending`, written by the StorageActor).
pub use crate::storage::rows::PENDING;
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// Bind-parameter budget per statement, well under SQLite's limit.
const CHUNK: usize = 200;

fn ts(t: DateTime<Utc>) -> DateTime<FixedOffset> {
    t.fixed_offset()
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A claimed entry with what a delivery attempt needs.
#[derive(Debug, Clone)]
pub struct ClaimedEntry {
    pub id: String,
    pub message_id: String,
    pub object_key: String,
    /// The body's size in bytes, so a worker can plan what it loads at once.
    pub size: u64,
    pub envelope_from: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Attempts before this one.
    pub attempts: i32,
    /// Its pending recipients: all of them are tried in this attempt.
    pub recipients: Vec<ClaimedRecipient>,
}

#[derive(Debug, Clone)]
pub struct ClaimedRecipient {
    pub id: i64,
    pub address: String,
    pub domain: String,
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

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        reply: String,
    },
    /// Try again later (4xx, connection failure).
    Deferred {
        reply: String,
    },
    /// Given up: 5xx, or `queue.max_age` reached. A DSN has been sent (unless the sender
    /// is null).
    Failed {
        reply: String,
        expired: bool,
    },
    /// Not attempted (shutdown): back to the queue as it was.
    Released,
}

impl Outcome {
    fn history_name(&self) -> Option<&'static str> {
        match self {
            Outcome::Delivered { .. } => Some("delivered"),
            Outcome::Deferred { .. } => Some("deferred"),
            Outcome::Failed { expired: false, .. } => Some("bounced"),
            Outcome::Failed { expired: true, .. } => Some("expired"),
            Outcome::Released => None,
        }
    }

    fn reply(&self) -> Option<&str> {
        match self {
            Outcome::Delivered { reply }
            | Outcome::Deferred { reply }
            | Outcome::Failed { reply, .. } => Some(reply),
            Outcome::Released => None,
        }
    }

    fn is_final(&self) -> bool {
        matches!(self, Outcome::Delivered { .. } | Outcome::Failed { .. })
    }
}

/// The result of one attempt on one recipient.
#[derive(Debug, Clone)]
pub struct RecipientResult {
    pub recipient: ClaimedRecipient,
    pub outcome: Outcome,
    pub remote_host: Option<String>,
}

/// The result of one attempt on one claimed entry: one result per claimed recipient.
#[derive(Debug, Clone)]
pub struct EntryResult {
    pub entry: ClaimedEntry,
    pub recipients: Vec<RecipientResult>,
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
                    Expr::value(r.outcome.reply().map(str::to_string)),
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
                    r.outcome.reply(),
                    r.remote_host.as_deref(),
                ))
            })
        })
        .collect();
    insert_history(&txn, history).await?;
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

/// The entry a history row is about, and when and where it was written.
struct HistoryOf<'a> {
    entry_id: &'a str,
    message_id: &'a str,
    envelope_from: &'a str,
    attempt: i32,
    node_id: &'a str,
    at: DateTime<FixedOffset>,
}

impl HistoryOf<'_> {
    fn row(
        &self,
        recipient: &str,
        outcome: &str,
        reply: Option<&str>,
        remote_host: Option<&str>,
    ) -> queue_history::ActiveModel {
        queue_history::ActiveModel {
            entry_id: Set(self.entry_id.to_string()),
            message_id: Set(self.message_id.to_string()),
            envelope_from: Set(self.envelope_from.to_string()),
            recipient: Set(recipient.to_string()),
            outcome: Set(outcome.to_string()),
            attempt: Set(self.attempt),
            reply: Set(reply.map(str::to_string)),
            remote_host: Set(remote_host.map(str::to_string)),
            node_id: Set(self.node_id.to_string()),
            at: Set(self.at),
            ..Default::default()
        }
    }
}

async fn insert_history<C: ConnectionTrait>(
    txn: &C,
    rows: Vec<queue_history::ActiveModel>,
) -> Result<(), DbErr> {
    for chunk in rows.chunks(CHUNK / 10) {
        queue_history::Entity::insert_many(chunk.to_vec())
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// Deletes the `messages` rows among `ids` that no mailbox and no queue entry uses any
/// more ([`crate::retention::drop_unreferenced`]), and returns their object keys.
async fn drop_unreferenced_messages<C: ConnectionTrait>(
    txn: &C,
    ids: &[String],
) -> Result<Vec<String>, DbErr> {
    Ok(crate::retention::drop_unreferenced(txn, ids)
        .await?
        .into_iter()
        .map(|m| m.object_key)
        .collect())
}

/// One entry as `mairust queue list` and `GET /api/v1/queue` show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntryView {
    pub id: String,
    pub envelope_from: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub attempts: i32,
    /// The node delivering it right now, if any.
    pub lease_owner: Option<String>,
    pub size: Option<i64>,
    pub recipients: Vec<RecipientView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecipientView {
    pub address: String,
    pub status: String,
    pub attempts: i32,
    pub last_reply: Option<String>,
}

/// Entries in order of their next attempt, at most `limit`; with `sender_domains`, only
/// those whose sender is in one of these (lower-case) domains (an API key limited to
/// them). The sender is the account that submitted the message when there is one (the
/// reverse-path can be anything where `smtp.submission.enforce_envelope_sender` is off),
/// else the reverse-path.
pub async fn list(
    db: &DatabaseConnection,
    limit: u64,
    sender_domains: Option<&BTreeSet<String>>,
) -> Result<Vec<EntryView>, DbErr> {
    let mut select = queue_entry::Entity::find()
        .order_by_asc(queue_entry::Column::NextAttemptAt)
        .order_by_asc(queue_entry::Column::Id)
        .limit(limit);
    if let Some(domains) = sender_domains {
        if domains.is_empty() {
            return Ok(Vec::new());
        }
        // Reverse-paths are stored with the domain in lower case (`Address::parse`), and
        // domain names hold no LIKE wildcard (`%`, `_`).
        let submitted_by = || Expr::col((message::Entity, message::Column::SubmittedBy));
        let mut any = sea_orm::Condition::any();
        for d in domains {
            let pattern = format!("%@{d}");
            any = any.add(submitted_by().like(pattern.clone())).add(
                sea_orm::Condition::all()
                    .add(submitted_by().is_null())
                    .add(Expr::col((message::Entity, message::Column::EnvelopeFrom)).like(pattern)),
            );
        }
        // Correlated: each entry probes its message by primary key.
        select = select.filter(Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(message::Entity)
                .and_where(
                    Expr::col((message::Entity, message::Column::Id))
                        .equals((queue_entry::Entity, queue_entry::Column::MessageId)),
                )
                .cond_where(any)
                .to_owned(),
        ));
    }
    let entries = select.all(db).await?;
    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    let mut recipients: HashMap<String, Vec<RecipientView>> = HashMap::new();
    let mut sizes: HashMap<String, i64> = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        for r in queue_recipient::Entity::find()
            .filter(queue_recipient::Column::EntryId.is_in(chunk.to_vec()))
            .order_by_asc(queue_recipient::Column::Id)
            .all(db)
            .await?
        {
            recipients
                .entry(r.entry_id)
                .or_default()
                .push(RecipientView {
                    address: r.address,
                    status: r.status,
                    attempts: r.attempts,
                    last_reply: r.last_reply,
                });
        }
        sizes.extend(
            message::Entity::find()
                .select_only()
                .column(message::Column::Id)
                .column(message::Column::Size)
                .filter(message::Column::Id.is_in(chunk.to_vec()))
                .into_tuple::<(String, i64)>()
                .all(db)
                .await?,
        );
    }
    let now = Utc::now();
    Ok(entries
        .into_iter()
        .map(|e| EntryView {
            size: sizes.get(&e.message_id).copied(),
            recipients: recipients.remove(&e.id).unwrap_or_default(),
            lease_owner: e
                .lease_owner
                .filter(|_| e.lease_until.is_some_and(|u| u.to_utc() > now)),
            id: e.id,
            envelope_from: e.envelope_from,
            created_at: e.created_at.to_utc(),
            expires_at: e.expires_at.to_utc(),
            next_attempt_at: e.next_attempt_at.to_utc(),
            attempts: e.attempts,
        })
        .collect())
}

/// Queue figures for `mairust queue stats` (and later /metrics and `mairust status`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct QueueStats {
    /// Entries in the queue.
    pub entries: u64,
    /// Recipients still to be delivered.
    pub pending_recipients: u64,
    /// Entries due now and not being delivered.
    pub due: u64,
    /// Entries some node is delivering right now.
    pub in_flight: u64,
    /// Entries waiting for a retry after a failed attempt.
    pub deferred: u64,
    pub oldest_age_seconds: Option<i64>,
    /// Outcomes recorded in the last hour, from the history.
    pub last_hour: HistoryCounts,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default, ToSchema)]
pub struct HistoryCounts {
    pub delivered: u64,
    pub deferred: u64,
    pub bounced: u64,
    pub expired: u64,
}

pub async fn stats(db: &DatabaseConnection) -> Result<QueueStats, DbErr> {
    let now = Utc::now();
    let (entries, oldest) = length(db).await?;
    let pending_recipients = queue_recipient::Entity::find()
        .filter(queue_recipient::Column::Status.eq(PENDING))
        .count(db)
        .await?;
    let leased = || {
        sea_orm::Condition::all()
            .add(queue_entry::Column::LeaseUntil.is_not_null())
            .add(queue_entry::Column::LeaseUntil.gte(ts(now)))
    };
    let in_flight = queue_entry::Entity::find()
        .filter(leased())
        .count(db)
        .await?;
    let due = queue_entry::Entity::find()
        .filter(queue_entry::Column::NextAttemptAt.lte(ts(now)))
        .filter(leased().not())
        .count(db)
        .await?;
    let deferred = queue_entry::Entity::find()
        .filter(queue_entry::Column::Attempts.gt(0))
        .count(db)
        .await?;
    let mut last_hour = HistoryCounts::default();
    let rows: Vec<(String, i64)> = queue_history::Entity::find()
        .select_only()
        .column(queue_history::Column::Outcome)
        .column_as(queue_history::Column::Id.count(), "n")
        .filter(queue_history::Column::At.gte(ts(now - chrono::Duration::hours(1))))
        .group_by(queue_history::Column::Outcome)
        .into_tuple()
        .all(db)
        .await?;
    for (outcome, n) in rows {
        let n = n as u64;
        match outcome.as_str() {
            "delivered" => last_hour.delivered = n,
            "deferred" => last_hour.deferred = n,
            "bounced" => last_hour.bounced = n,
            "expired" => last_hour.expired = n,
            _ => {}
        }
    }
    Ok(QueueStats {
        entries,
        pending_recipients,
        due,
        in_flight,
        deferred,
        oldest_age_seconds: oldest,
        last_hour,
    })
}

/// Entries in the queue and the age of the oldest in seconds (health and metrics).
pub async fn length(db: &DatabaseConnection) -> Result<(u64, Option<i64>), DbErr> {
    let length = queue_entry::Entity::find().count(db).await?;
    let oldest = queue_entry::Entity::find()
        .order_by_asc(queue_entry::Column::CreatedAt)
        .one(db)
        .await?
        .map(|e| (Utc::now() - e.created_at.to_utc()).num_seconds());
    Ok((length, oldest))
}

/// The sender of a queued entry, as [`list`] judges it: the submitting account, else the
/// reverse-path (empty for a bounce); `None` when it is not queued.
pub async fn sender(db: &DatabaseConnection, id: &str) -> Result<Option<String>, DbErr> {
    let Some(entry) = queue_entry::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let submitted_by: Option<Option<String>> = message::Entity::find_by_id(entry.message_id)
        .select_only()
        .column(message::Column::SubmittedBy)
        .into_tuple()
        .one(db)
        .await?;
    Ok(Some(submitted_by.flatten().unwrap_or(entry.envelope_from)))
}

/// Makes an entry due now (`mairust queue retry`). False when there is no such entry.
pub async fn retry_now(db: &DatabaseConnection, id: &str) -> Result<bool, DbErr> {
    let now = ts(Utc::now());
    let txn = db.begin().await?;
    let updated = queue_entry::Entity::update_many()
        .col_expr(queue_entry::Column::NextAttemptAt, Expr::value(now))
        .filter(queue_entry::Column::Id.eq(id))
        .exec(&txn)
        .await?
        .rows_affected;
    queue_recipient::Entity::update_many()
        .col_expr(queue_recipient::Column::NextAttemptAt, Expr::value(now))
        .filter(queue_recipient::Column::EntryId.eq(id))
        .filter(queue_recipient::Column::Status.eq(PENDING))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(updated > 0)
}

/// Why `queue delete` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("no queued message with id {0}")]
    NotFound(String),
    #[error("{id} is being delivered right now by {owner}; try again when that attempt is over")]
    InFlight { id: String, owner: String },
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Removes an entry without delivering or bouncing it (`mairust queue delete`); its
/// pending recipients go to the history as `deleted`. Returns the object keys to delete
/// when no other row uses the body. An entry a worker holds right now is refused.
pub async fn delete(
    db: &DatabaseConnection,
    id: &str,
    node_id: &str,
) -> Result<Vec<String>, DeleteError> {
    let txn = db.begin().await?;
    // A write first: on SQLite the transaction holds the write lock from here on.
    let marked = queue_entry::Entity::update_many()
        .col_expr(
            queue_entry::Column::Attempts,
            Expr::col(queue_entry::Column::Attempts),
        )
        .filter(queue_entry::Column::Id.eq(id))
        .exec(&txn)
        .await?
        .rows_affected;
    let entry = match queue_entry::Entity::find_by_id(id.to_string())
        .one(&txn)
        .await?
    {
        Some(entry) if marked > 0 => entry,
        _ => return Err(DeleteError::NotFound(id.to_string())),
    };
    if let (Some(owner), Some(until)) = (&entry.lease_owner, entry.lease_until)
        && until.to_utc() > Utc::now()
    {
        return Err(DeleteError::InFlight {
            id: id.to_string(),
            owner: owner.clone(),
        });
    }
    let now = ts(Utc::now());
    let pending = queue_recipient::Entity::find()
        .filter(queue_recipient::Column::EntryId.eq(id))
        .filter(queue_recipient::Column::Status.eq(PENDING))
        .all(&txn)
        .await?;
    queue_entry::Entity::delete_by_id(id.to_string())
        .exec(&txn)
        .await?;
    let history: Vec<queue_history::ActiveModel> = pending
        .into_iter()
        .map(|r| {
            HistoryOf {
                entry_id: &entry.id,
                message_id: &entry.message_id,
                envelope_from: &entry.envelope_from,
                attempt: entry.attempts,
                node_id,
                at: now,
            }
            .row(&r.address, "deleted", Some("deleted by the operator"), None)
        })
        .collect();
    insert_history(&txn, history).await?;
    let keys = drop_unreferenced_messages(&txn, std::slice::from_ref(&entry.message_id)).await?;
    txn.commit().await?;
    Ok(keys)
}

/// Outcomes recorded for one entry, oldest first (tests and `queue list --json`).
pub async fn history(
    db: &DatabaseConnection,
    entry_id: &str,
) -> Result<Vec<queue_history::Model>, DbErr> {
    queue_history::Entity::find()
        .filter(queue_history::Column::EntryId.eq(entry_id))
        .order_by_asc(queue_history::Column::Id)
        .all(db)
        .await
}
