//! `mairust queue list|stats|retry ID|delete ID` (SPEC M6, O13): read and edit the
//! outbound queue straight in the database, so they work whether or not a server runs
//! (a running server's workers see the change at their next claim).

use anyhow::bail;
use chrono::Utc;
use clap::Subcommand;
use mairust_actors::config::Config;
use mairust_actors::queue::admin;
use mairust_actors::storage::BodyStore;

#[derive(Subcommand)]
pub enum QueueAction {
    /// List queued messages with their recipients, next attempt first.
    List {
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Queue length, what is due, in flight and deferred, and the last hour's outcomes.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Make a queued message due now.
    Retry {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a queued message without delivering or bouncing it.
    Delete {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub async fn run(config: &Config, action: QueueAction) -> anyhow::Result<()> {
    let db = super::open_current(config).await?;
    let result = act(config, &db, action).await;
    db.close().await?;
    result
}

async fn act(
    config: &Config,
    db: &sea_orm::DatabaseConnection,
    action: QueueAction,
) -> anyhow::Result<()> {
    match action {
        QueueAction::List { limit, json } => {
            let entries = admin::list(db, limit, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(());
            }
            if entries.is_empty() {
                println!("the queue is empty");
                return Ok(());
            }
            let now = Utc::now();
            for e in &entries {
                let from = if e.envelope_from.is_empty() {
                    "<> (bounce)"
                } else {
                    &e.envelope_from
                };
                let next = (e.next_attempt_at - now).num_seconds();
                let when = match &e.lease_owner {
                    Some(owner) => format!("delivering now on {owner}"),
                    None if next <= 0 => "due now".to_string(),
                    None => format!("next attempt in {}", age(next)),
                };
                println!(
                    "{}  {}  age {}  attempts {}  {}  from {}",
                    e.id,
                    e.size.map_or("?".to_string(), |s| format!("{s} B")),
                    age((now - e.created_at).num_seconds()),
                    e.attempts,
                    when,
                    from
                );
                for r in &e.recipients {
                    match &r.last_reply {
                        Some(reply) => println!("    {} {}: {}", r.status, r.address, reply),
                        None => println!("    {} {}", r.status, r.address),
                    }
                }
            }
            println!(
                "{} entr{}",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            );
        }
        QueueAction::Stats { json } => {
            let s = admin::stats(db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            println!("entries:             {}", s.entries);
            println!("pending recipients:  {}", s.pending_recipients);
            println!("due now:             {}", s.due);
            println!("in flight:           {}", s.in_flight);
            println!("deferred (retrying): {}", s.deferred);
            println!(
                "oldest:              {}",
                s.oldest_age_seconds.map_or("-".to_string(), age)
            );
            println!(
                "last hour:           {} delivered, {} deferred, {} bounced, {} expired",
                s.last_hour.delivered,
                s.last_hour.deferred,
                s.last_hour.bounced,
                s.last_hour.expired
            );
        }
        QueueAction::Retry { id, json } => {
            if !admin::retry_now(db, &id).await? {
                bail!("no queued message with id {id}");
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": id, "retry": "scheduled now"})
                );
            } else {
                println!("{id}: due now");
            }
        }
        QueueAction::Delete { id, json } => {
            let keys = admin::delete(db, &id, "cli").await?;
            if !keys.is_empty() {
                BodyStore::open(&config.storage)?
                    .delete_unreferenced(&keys)
                    .await;
            }
            if json {
                println!("{}", serde_json::json!({"id": id, "deleted": true}));
            } else {
                println!("{id}: deleted");
            }
        }
    }
    Ok(())
}
