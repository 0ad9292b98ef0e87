//! The operator's views and edits of the queue, for `mairust queue ...` and
//! `/api/v1/queue`: list, figures, retry now, delete, and an entry's history. Workers
//! never call these; their side of the tables is [`super::store`].

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use mairust_entities::{message, queue_entry, queue_history, queue_recipient};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::attempt;
use super::store::{CHUNK, HistoryOf, PENDING, drop_unreferenced_messages, insert_chunked, ts};

/// The reply recorded in the history for recipients `mairust queue delete` removed.
pub const DELETED_BY_OPERATOR: &str = "deleted by the operator";

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
            attempt::DELIVERED => last_hour.delivered = n,
            attempt::DEFERRED => last_hour.deferred = n,
            attempt::BOUNCED => last_hour.bounced = n,
            attempt::EXPIRED => last_hour.expired = n,
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
            .row(
                &r.address,
                attempt::DELETED,
                Some(DELETED_BY_OPERATOR.to_string()),
                None,
            )
        })
        .collect();
    insert_chunked(&txn, history).await?;
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
