//! `mairust db check [--fix]` (SPEC O7): the database against the object store, and the
//! database against itself. Run it after a storage outage or a restore.
//!
//! | problem | found by | `--fix` |
//! |---|---|---|
//! | `missing_object` | a message row whose body is not in the store | the body is lost: the row, its mailbox entries and queue entry are removed and each is written to the audit log (`db_check.lost_message`) — refused when more than 5 and more than 10% of the bodies are missing (a store misconfigured, not lost: check `storage`), unless `--accept-lost` |
//! | `size_mismatch` | the row's size differs from the object's, its checksum matches | the row takes the object's size |
//! | `checksum_mismatch` | the object's SHA-256 differs from the row's | reported (the body is damaged) |
//! | `spare_file` | an empty file under `messages/` that no row refers to, older than 10 minutes: made ahead for a body by a server (SQLite + fs) that was killed, or expired unused on an idle one | removed, once read again as still empty, that old and unreferenced (a body is never empty; a server writes into such a file only while it is younger than 5 minutes by its time) |
//! | `orphan_object` | a body under `messages/` that no row refers to | moved to `lost+found/<key>` once older than `--orphan-grace` (a body is written before its row); kept, since it may be the only copy of a message whose row was lost — refused when more than 5 and more than 10% of the bodies are orphans, unless `--accept-orphans` |
//! | `stale_lease` | a queue entry still leased long after the lease ran out | lease cleared |
//! | `dangling_index` | a mailbox entry whose message or mailbox row is gone | entry deleted |
//! | `dangling_queue` | a queue entry whose message row is gone, or a recipient whose entry is | reported / recipient deleted |
//!
//! Exit code 0 when nothing is left to repair by hand, 1 otherwise.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use mairust_actors::audit::{AuditLog, Entry};
use mairust_actors::config::Config;
use mairust_actors::storage::BodyStore;
use mairust_actors::storage::bodies::{BodyError, ObjectInfo, STALE_TEMPORARY};
use mairust_actors::storage::envelope::hex;
use mairust_entities::{mailbox_message, message, queue_entry, queue_recipient, unflushed_message};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, PrimaryKeyTrait, QueryFilter,
    TransactionTrait,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Where `--fix` puts orphan bodies.
const LOST_AND_FOUND: &str = "lost+found/";

#[derive(Args)]
pub struct CheckArgs {
    /// Repair what can be repaired safely.
    #[arg(long)]
    fix: bool,
    /// Orphan bodies younger than this many seconds are left alone (they may belong to
    /// a message being stored right now).
    #[arg(long, default_value_t = 3600)]
    orphan_grace: u64,
    /// Skip reading every body to compare checksums (sizes are still compared).
    #[arg(long)]
    no_checksums: bool,
    /// With --fix: remove the rows of missing bodies even when many are missing.
    #[arg(long)]
    accept_lost: bool,
    /// With --fix: move orphan bodies to lost+found/ even when many are orphans.
    #[arg(long)]
    accept_orphans: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub kind: &'static str,
    /// The row or object concerned.
    pub subject: String,
    pub detail: String,
    pub fixed: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    messages: usize,
    objects: usize,
    problems: Vec<Problem>,
    remaining: usize,
}

fn problem(kind: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem {
        kind,
        subject: subject.into(),
        detail: detail.into(),
        fixed: false,
    }
}

pub async fn run(config: &Config, args: CheckArgs) -> anyhow::Result<bool> {
    let db = super::open_existing(config).await?;
    let audit = super::audit_log(config, &db);
    let store = BodyStore::open(&config.storage).context("opening the object store")?;
    let mut problems = Vec::new();

    // Rows first, then the journal, then the listing: a row not journalled any more
    // when the journal is read had its body durable before the listing starts.
    let rows: Vec<message::Model> = message::Entity::find().all(&db).await?;
    // While a server runs, journalled rows (SQLite) are being stored right now: their
    // body may not be written yet, and they are not anybody's to remove (see
    // storage::actor). With no server holding the pid file (or none configured to
    // tell), nothing is in flight and every row is checked.
    let server_running = match &config.server.pid_file {
        Some(pid_file) => super::pidfile::observe(pid_file)?
            .and_then(|seen| seen.holder)
            .is_some(),
        None => true,
    };
    let in_flight: HashSet<String> = if server_running {
        unflushed_message::Entity::find()
            .all(&db)
            .await?
            .into_iter()
            .map(|entry| entry.message_id)
            .collect()
    } else {
        HashSet::new()
    };
    let objects = store
        .list("messages/")
        .await
        .context("listing the object store")?;
    let listed: HashMap<&str, &mairust_actors::storage::bodies::ObjectInfo> =
        objects.iter().map(|o| (o.key.as_str(), o)).collect();
    let referenced: HashSet<&str> = rows.iter().map(|m| m.object_key.as_str()).collect();

    let mut lost = Vec::new();
    for row in rows.iter().filter(|row| !in_flight.contains(&row.id)) {
        let Some(object) = listed.get(row.object_key.as_str()) else {
            lost.push(row);
            continue;
        };
        let size_differs = object.size != row.size as u64;
        if !size_differs && args.no_checksums {
            continue;
        }
        let body = match store.get(&row.object_key).await {
            Ok(body) => body,
            Err(BodyError::NotFound(_)) => {
                problems.push(problem(
                    "missing_object",
                    format!("message {}", row.id),
                    format!("body {} vanished during the check", row.object_key),
                ));
                continue;
            }
            Err(e) => return Err(e).context("reading a body"),
        };
        let sha = hex(&Sha256::digest(&body));
        if sha != row.sha256 {
            problems.push(problem(
                "checksum_mismatch",
                format!("message {}", row.id),
                format!(
                    "body {} has SHA-256 {sha}, the row says {}",
                    row.object_key, row.sha256
                ),
            ));
        } else if size_differs {
            let mut p = problem(
                "size_mismatch",
                format!("message {}", row.id),
                format!(
                    "row says {} bytes, body {} has {} (checksum matches)",
                    row.size,
                    row.object_key,
                    body.len()
                ),
            );
            if args.fix {
                message::Entity::update(message::ActiveModel {
                    id: Set(row.id.clone()),
                    size: Set(body.len() as i64),
                    ..Default::default()
                })
                .exec(&db)
                .await?;
                p.fixed = true;
            }
            problems.push(p);
        }
    }

    let grace = chrono::Duration::from_std(Duration::from_secs(args.orphan_grace))
        .unwrap_or(chrono::Duration::MAX);
    // Empty ones are files a server made ahead for bodies (SQLite + fs): a running
    // server's are young and not anybody's to touch; older ones were left by a kill.
    let (spares, orphans): (Vec<_>, Vec<_>) = objects
        .iter()
        .filter(|o| !referenced.contains(o.key.as_str()))
        .partition(|o| o.size == 0);
    let stale = chrono::Duration::from_std(STALE_TEMPORARY).unwrap_or(chrono::Duration::MAX);
    // What is acted on is read again first: the listing is minutes old by now, and a
    // running server may have written a body or a row since.
    let mut now_referenced: Option<HashSet<String>> = None;
    for object in spares {
        let age = chrono::Utc::now() - object.last_modified;
        if age < stale {
            continue;
        }
        let mut p = problem(
            "spare_file",
            object.key.clone(),
            format!(
                "an empty file made ahead for a body and never used ({} s old; left by a kill, or expired on an idle server)",
                age.num_seconds()
            ),
        );
        if args.fix {
            let still =
                |o: &ObjectInfo| o.size == 0 && chrono::Utc::now() - o.last_modified >= stale;
            if unchanged(&db, &store, &mut now_referenced, &object.key, still).await? {
                store.delete(&object.key).await?;
                p.detail.push_str("; removed");
                p.fixed = true;
            } else {
                p.detail
                    .push_str("; written or referred to since, left alone");
            }
        }
        problems.push(p);
    }
    // Many orphans means rows were lost (an old database restored, the wrong database),
    // not debris: leave the bodies where they are.
    let many_orphans = orphans.len() > 5 && orphans.len() * 10 > objects.len();
    for object in orphans {
        let age = chrono::Utc::now() - object.last_modified;
        let mut p = problem(
            "orphan_object",
            object.key.clone(),
            format!(
                "{} bytes, no message row refers to it ({} s old)",
                object.size,
                age.num_seconds()
            ),
        );
        if args.fix {
            if many_orphans && !args.accept_orphans {
                p.detail.push_str(
                    "; not moved: too many orphans, were rows lost? (--accept-orphans moves them)",
                );
            } else if age >= grace
                && !unchanged(&db, &store, &mut now_referenced, &object.key, |o| {
                    o.size == object.size && o.last_modified == object.last_modified
                })
                .await?
            {
                p.detail
                    .push_str("; written or referred to since, left alone");
            } else if age >= grace {
                let kept = format!("{LOST_AND_FOUND}{}", object.key);
                let body = store.get(&object.key).await?;
                store.put(&kept, body).await?;
                store.delete(&object.key).await?;
                p.detail.push_str(&format!("; moved to {kept}"));
                p.fixed = true;
            } else {
                p.detail
                    .push_str("; younger than --orphan-grace, left alone");
            }
        }
        problems.push(p);
    }

    let too_many = lost.len() > 5 && lost.len() * 10 > rows.len();
    for row in lost {
        let mut p = problem(
            "missing_object",
            format!("message {}", row.id),
            format!(
                "body {} is not in the store (Message-ID {}, from {}, to {})",
                row.object_key,
                row.message_id.as_deref().unwrap_or("-"),
                row.envelope_from,
                row.envelope_to
            ),
        );
        if args.fix && too_many && !args.accept_lost {
            p.detail.push_str("; not removed: too many bodies missing, is `storage` right? (--accept-lost removes them)");
        } else if args.fix {
            remove_lost(&db, &audit, row).await?;
            p.detail
                .push_str("; row removed, recorded in the audit log");
            p.fixed = true;
        }
        problems.push(p);
    }

    check_leases(&db, args.fix, &mut problems).await?;
    check_dangling(&db, args.fix, &mut problems).await?;

    let remaining = problems.iter().filter(|p| !p.fixed).count();
    let report = Report {
        messages: rows.len(),
        objects: objects.len(),
        problems,
        remaining,
    };
    db.close().await.ok();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} message rows and {} stored bodies",
            report.messages, report.objects
        );
        if report.problems.is_empty() {
            println!("no problems found");
        }
        for p in &report.problems {
            let state = if p.fixed { "fixed" } else { "found" };
            println!("{state:5}  {:<17} {}: {}", p.kind, p.subject, p.detail);
        }
        if report.remaining > 0 {
            let hint = if args.fix {
                "need attention by hand"
            } else {
                "found; `--fix` repairs what can be repaired"
            };
            println!("{} problem(s) {hint}", report.remaining);
        }
    }
    Ok(report.remaining == 0)
}

/// A message whose body is gone: its rows go, the audit log keeps what it was.
/// Whether the object at `key`, read again now, still `fits` and no row refers to it
/// (the rows' keys are read again once, on first use).
async fn unchanged(
    db: &DatabaseConnection,
    store: &BodyStore,
    referenced: &mut Option<HashSet<String>>,
    key: &str,
    fits: impl Fn(&ObjectInfo) -> bool,
) -> anyhow::Result<bool> {
    let Some(now) = store.head(key).await.context("reading an object again")? else {
        return Ok(false);
    };
    if !fits(&now) {
        return Ok(false);
    }
    if referenced.is_none() {
        let keys = super::column(db, "SELECT object_key FROM messages").await?;
        *referenced = Some(keys.into_iter().collect());
    }
    Ok(!referenced.as_ref().is_some_and(|keys| keys.contains(key)))
}

async fn remove_lost(
    db: &DatabaseConnection,
    audit: &AuditLog,
    row: &message::Model,
) -> anyhow::Result<()> {
    let txn = db.begin().await?;
    mailbox_message::Entity::delete_many()
        .filter(mailbox_message::Column::MessageId.eq(row.id.clone()))
        .exec(&txn)
        .await?;
    let entries: Vec<String> = queue_entry::Entity::find()
        .filter(queue_entry::Column::MessageId.eq(row.id.clone()))
        .all(&txn)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    queue_recipient::Entity::delete_many()
        .filter(queue_recipient::Column::EntryId.is_in(entries.clone()))
        .exec(&txn)
        .await?;
    queue_entry::Entity::delete_many()
        .filter(queue_entry::Column::Id.is_in(entries))
        .exec(&txn)
        .await?;
    message::Entity::delete_by_id(row.id.clone())
        .exec(&txn)
        .await?;
    txn.commit().await?;
    audit
        .record(
            Entry::success("db_check.lost_message", super::cli_actor())
                .target(&row.id)
                .detail("object_key", row.object_key.clone())
                .detail("message_id", row.message_id.clone())
                .detail("subject", row.subject.clone())
                .detail("envelope_from", row.envelope_from.clone())
                .detail("envelope_to", row.envelope_to.clone())
                .detail("received_at", row.received_at.to_rfc3339()),
        )
        .await;
    Ok(())
}

/// Leases that ran out more than a minute ago and still name an owner.
async fn check_leases(
    db: &DatabaseConnection,
    fix: bool,
    problems: &mut Vec<Problem>,
) -> anyhow::Result<()> {
    let cutoff = chrono::Utc::now() - chrono::Duration::minutes(1);
    let stale = queue_entry::Entity::find()
        .filter(queue_entry::Column::LeaseOwner.is_not_null())
        .filter(queue_entry::Column::LeaseUntil.lt(cutoff.fixed_offset()))
        .all(db)
        .await?;
    for e in stale {
        let mut p = problem(
            "stale_lease",
            format!("queue entry {}", e.id),
            format!(
                "leased by {} until {}",
                e.lease_owner.unwrap_or_default(),
                e.lease_until.map(|t| t.to_rfc3339()).unwrap_or_default()
            ),
        );
        if fix {
            queue_entry::Entity::update_many()
                .col_expr(queue_entry::Column::LeaseOwner, Expr::value(None::<String>))
                .col_expr(
                    queue_entry::Column::LeaseUntil,
                    Expr::value(None::<chrono::DateTime<chrono::FixedOffset>>),
                )
                .filter(queue_entry::Column::Id.eq(e.id.clone()))
                .exec(db)
                .await?;
            p.fixed = true;
        }
        problems.push(p);
    }
    Ok(())
}

/// Rows that point at rows that are gone.
async fn check_dangling(
    db: &DatabaseConnection,
    fix: bool,
    problems: &mut Vec<Problem>,
) -> anyhow::Result<()> {
    DANGLING_INDEX
        .check::<mailbox_message::Entity>(db, fix, problems)
        .await?;
    let entries = super::column(
        db,
        "SELECT q.id AS id FROM queue_entries q LEFT JOIN messages m ON m.id = q.message_id \
         WHERE m.id IS NULL",
    )
    .await?;
    for id in entries {
        problems.push(problem(
            "dangling_queue",
            format!("queue entry {id}"),
            "its message row is gone: `mairust queue delete` it, or restore the message",
        ));
    }
    DANGLING_RECIPIENTS
        .check::<queue_recipient::Entity>(db, fix, problems)
        .await
}

/// Mailbox entries whose message or mailbox is gone.
const DANGLING_INDEX: Dangling = Dangling {
    kind: "dangling_index",
    subject: "mailbox entry",
    detail: "its message or mailbox row is gone",
    sql: "SELECT mm.id AS id FROM mailbox_messages mm \
          LEFT JOIN messages m ON m.id = mm.message_id \
          LEFT JOIN mailboxes b ON b.id = mm.mailbox_id \
          WHERE m.id IS NULL OR b.id IS NULL",
};

/// Queue recipients whose queue entry is gone.
const DANGLING_RECIPIENTS: Dangling = Dangling {
    kind: "dangling_queue",
    subject: "queue recipient",
    detail: "its queue entry is gone",
    sql: "SELECT r.id AS id FROM queue_recipients r \
          LEFT JOIN queue_entries q ON q.id = r.entry_id WHERE q.id IS NULL",
};

/// A kind of row whose parent row is gone: nothing can use it, so `--fix` deletes it.
struct Dangling {
    kind: &'static str,
    /// What the row is, before its id in the report.
    subject: &'static str,
    detail: &'static str,
    /// The ids of such rows.
    sql: &'static str,
}

impl Dangling {
    /// One problem for each row found (rows of `E`, keyed by an integer id); with `fix`,
    /// the row is deleted.
    async fn check<E>(
        &self,
        db: &DatabaseConnection,
        fix: bool,
        problems: &mut Vec<Problem>,
    ) -> anyhow::Result<()>
    where
        E: EntityTrait,
        <E::PrimaryKey as PrimaryKeyTrait>::ValueType: From<i64>,
    {
        for id in super::column(db, self.sql).await? {
            let mut p = problem(self.kind, format!("{} {id}", self.subject), self.detail);
            if fix && let Ok(n) = id.parse::<i64>() {
                E::delete_by_id(n).exec(db).await?;
                p.fixed = true;
            }
            problems.push(p);
        }
        Ok(())
    }
}
