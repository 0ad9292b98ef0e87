//! `mairust migrate` (apply pending), `mairust migrate status`, `mairust migrate
//! --check` (what the pending ones mean for nodes of the previous release) and `mairust
//! migrate rollback --to VERSION` (run down steps until VERSION is the newest applied;
//! `0` for an empty schema).
//!
//! Rolling upgrade (SPEC O10): run the new release's `mairust migrate` while the old
//! nodes serve, then replace the nodes one by one. That works when every pending
//! migration is additive; a node of the older release keeps serving on such a schema,
//! and refuses (at start, and by turning unready while running) a schema with a breaking
//! migration it does not know. A server refuses a schema older than its own.

use anyhow::Context;
use clap::Subcommand;
use mairust_actors::config::Config;
use mairust_actors::database::{self, SchemaStatus};
use mairust_migration::{Compat, Migrator, MigratorTrait};

#[derive(Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration (the default).
    Up,
    /// List migrations and whether each is applied.
    Status,
    /// Undo the migrations applied after VERSION (its full name, or its number such as
    /// 3 or 000003; 0 undoes all).
    Rollback {
        #[arg(long)]
        to: String,
    },
}

/// The index in `names` of the migration `version` names: a full name or its number.
fn find_version(names: &[String], version: &str) -> Option<usize> {
    let number = version.trim_start_matches('0');
    names.iter().position(|n| {
        n == version
            || n.split('_')
                .nth(1)
                .is_some_and(|seq| !number.is_empty() && seq.trim_start_matches('0') == number)
    })
}

pub async fn run(config: &Config, action: Option<MigrateAction>) -> anyhow::Result<()> {
    let db = super::connect(config).await?;
    let status = database::schema_status(&db).await?;
    match action.unwrap_or(MigrateAction::Up) {
        MigrateAction::Up => {
            if let SchemaStatus::Ahead { .. } = status {
                return Err(super::schema_error(&status));
            }
            let pending = Migrator::get_pending_migrations(&db).await?;
            if pending.is_empty() {
                println!("database schema is up to date");
                return Ok(());
            }
            for m in &pending {
                println!("applying {}", m.name());
            }
            database::migrate_up(&db)
                .await
                .context("migration failed")?;
            println!("applied {} migration(s)", pending.len());
        }
        MigrateAction::Rollback { to } => {
            if let SchemaStatus::Ahead { .. } = status {
                return Err(super::schema_error(&status));
            }
            let applied: Vec<String> = Migrator::get_migration_models(&db)
                .await?
                .into_iter()
                .map(|m| m.version)
                .collect();
            let keep = if to.trim_start_matches('0').is_empty() {
                0
            } else {
                let known: Vec<String> = Migrator::migrations()
                    .iter()
                    .map(|m| m.name().to_string())
                    .collect();
                let Some(index) = find_version(&known, &to) else {
                    anyhow::bail!("no migration `{to}`; `mairust migrate status` lists them");
                };
                if !applied.contains(&known[index]) {
                    anyhow::bail!("{} is not applied: nothing to roll back to", known[index]);
                }
                index + 1
            };
            let steps = applied.len().saturating_sub(keep);
            if steps == 0 {
                println!("nothing to roll back: {to} is the newest applied migration");
            } else {
                for name in applied.iter().rev().take(steps) {
                    println!("rolling back {name}");
                }
                Migrator::down(&db, Some(steps as u32))
                    .await
                    .context("rollback failed")?;
                println!("rolled back {steps} migration(s)");
            }
        }
        MigrateAction::Status => {
            let applied: Vec<String> = Migrator::get_migration_models(&db)
                .await?
                .into_iter()
                .map(|m| m.version)
                .collect();
            for m in Migrator::migrations() {
                let state = if applied.iter().any(|a| a == m.name()) {
                    "applied"
                } else {
                    "pending"
                };
                println!("{state:8} {}", m.name());
            }
            if let SchemaStatus::Ahead { unknown, breaking } = &status {
                for u in unknown {
                    let what = if breaking.contains(u) {
                        "breaking"
                    } else {
                        "additive"
                    };
                    println!("{:8} {u} ({what}, from a newer release)", "unknown");
                }
                if !status.usable() {
                    return Err(super::schema_error(&status));
                }
            }
        }
    }
    db.close().await?;
    Ok(())
}

/// What one [`Compat`] means for the nodes of the previous release.
fn meaning(compat: Compat) -> &'static str {
    match compat {
        Compat::Additive => "additive: nodes of the previous release keep serving",
        Compat::Breaking => "breaking: nodes of older releases must be stopped or upgraded first",
    }
}

/// `mairust migrate --check`: the pending migrations and whether the nodes still
/// running the previous release may serve once they are applied. Changes nothing.
pub async fn check(config: &Config) -> anyhow::Result<()> {
    let db = super::connect(config).await?;
    let status = database::schema_status(&db).await?;
    db.close().await.ok();
    let pending = match status {
        SchemaStatus::Current => {
            println!("database schema is up to date: nothing to apply");
            return Ok(());
        }
        SchemaStatus::Fresh => {
            println!("empty database: `mairust migrate` (or the first `serve`) creates the schema");
            return Ok(());
        }
        SchemaStatus::Ahead { .. } => return Err(super::schema_error(&status)),
        SchemaStatus::Behind { pending } => pending,
    };
    let compat = mairust_migration::compatibility();
    let mut breaking = Vec::new();
    println!("{} pending migration(s):", pending.len());
    for name in &pending {
        let c = compat
            .iter()
            .find(|(n, _)| n == name)
            .map_or(Compat::Breaking, |(_, c)| *c);
        if c == Compat::Breaking {
            breaking.push(name.as_str());
        }
        println!("  {name}  {}", meaning(c));
    }
    if breaking.is_empty() {
        println!("rolling upgrade possible: migrate now, then replace the nodes one by one");
        Ok(())
    } else {
        anyhow::bail!(
            "rolling upgrade not possible: {} breaking; stop (or upgrade) every node of an older release before `mairust migrate`",
            breaking.join(", ")
        )
    }
}
