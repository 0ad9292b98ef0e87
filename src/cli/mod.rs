//! Subcommands. Each prints for people on stdout, errors on stderr, and returns an
//! error (exit code 1) when it could not do what was asked.

pub mod accounts;
pub mod admin;
pub mod migrate;
pub mod queue;
pub mod serve;

use anyhow::Context;
use mairust_actors::config::Config;
use mairust_actors::database::{self, SchemaStatus};
use sea_orm::DatabaseConnection;

/// Connects for a CLI command and refuses to work on a schema that is not current.
pub async fn open_current(config: &Config) -> anyhow::Result<DatabaseConnection> {
    let db = database::connect(&config.database).await.with_context(|| {
        format!(
            "cannot connect to the database ({})",
            redact(&config.database.url)
        )
    })?;
    match database::schema_status(&db).await? {
        SchemaStatus::Current => Ok(db),
        SchemaStatus::Fresh => {
            database::migrate_up(&db)
                .await
                .context("initialising the database")?;
            Ok(db)
        }
        status => Err(schema_error(&status)),
    }
}

pub fn schema_error(status: &SchemaStatus) -> anyhow::Error {
    match status {
        SchemaStatus::Behind { pending } => anyhow::anyhow!(
            "the database schema is older than this version of mairust ({} pending migration(s): {}); run `mairust migrate` first",
            pending.len(),
            pending.join(", ")
        ),
        SchemaStatus::Ahead { unknown } => anyhow::anyhow!(
            "the database schema is newer than this version of mairust knows (unknown migration(s): {}); run a newer mairust, or roll the schema back with that version's `mairust migrate rollback`",
            unknown.join(", ")
        ),
        SchemaStatus::Fresh | SchemaStatus::Current => anyhow::anyhow!("schema is usable"),
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}
