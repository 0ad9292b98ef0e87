//! `mairust migrate` (apply pending) and `mairust migrate status`.

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
}

pub async fn run(config: &Config, action: Option<MigrateAction>) -> anyhow::Result<()> {
    let db = database::connect(&config.database).await.with_context(|| {
        format!(
            "cannot connect to the database ({})",
            super::redact(&config.database.url)
        )
    })?;
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
