//! `mairust migrate` (apply pending), `mairust migrate status` and `mairust migrate
//! rollback --to VERSION` (run down steps until VERSION is the newest applied; `0` for
//! an empty schema). Stop the servers first: a server refuses a schema older or newer
//! than its own.

use anyhow::Context;
use clap::Subcommand;
use mairust_actors::config::Config;
use mairust_actors::database::{self, SchemaStatus};
use mairust_migration::{Migrator, MigratorTrait};

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
            if let SchemaStatus::Ahead { unknown } = &status {
                for u in unknown {
                    println!("{:8} {u}", "unknown");
                }
                return Err(super::schema_error(&status));
            }
        }
    }
    db.close().await?;
    Ok(())
}
