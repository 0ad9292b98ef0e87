//! Subcommands. Each prints for people on stdout, errors on stderr, and returns an
//! error (exit code 1) when it could not do what was asked.

pub mod accounts;
pub mod admin;
pub mod backup;
pub mod dbcheck;
pub mod diag;
pub mod dkim;
pub mod migrate;
pub mod pidfile;
pub mod queue;
pub mod reload;
pub mod serve;
pub mod store;

use anyhow::Context;
use std::sync::Arc;

use mairust_actors::audit::{AuditLog, Entry};
use mairust_actors::config::{AuditConfig, Config};
use mairust_actors::database::{self, SchemaStatus};
use sea_orm::DatabaseConnection;

/// Connects to a database that must already exist with the current schema: for
/// commands that read or repair data (a wrong `database.url` must not create an empty
/// database that makes every stored body look orphaned).
pub async fn open_existing(config: &Config) -> anyhow::Result<DatabaseConnection> {
    if let Some(path) = database::sqlite_path(&config.database.url)
        && !path.exists()
    {
        anyhow::bail!(
            "no database at {} (database.url): wrong path or working directory?",
            path.display()
        );
    }
    let db = connect(config).await?;
    if !database::has_schema(&db).await? {
        anyhow::bail!(
            "the database ({}) is empty: no MaiRust schema; wrong database.url?",
            redact(&config.database.url)
        );
    }
    match database::schema_status(&db).await? {
        status if status.usable() => {
            warn_if_ahead(&status);
            Ok(db)
        }
        status => Err(schema_error(&status)),
    }
}

/// A CLI command on a schema newer by additive migrations works, and says so.
fn warn_if_ahead(status: &SchemaStatus) {
    if let SchemaStatus::Ahead { unknown, .. } = status {
        eprintln!(
            "note: the database schema is newer than this mairust (additive migration(s): {}); upgrade this node soon",
            unknown.join(", ")
        );
    }
}

/// Connects to `database.url`, naming the database (without its password) when it
/// cannot.
pub async fn connect(config: &Config) -> anyhow::Result<DatabaseConnection> {
    database::connect(&config.database).await.with_context(|| {
        format!(
            "cannot connect to the database ({})",
            redact(&config.database.url)
        )
    })
}

/// Connects for a CLI command and refuses to work on a schema that is not current.
pub async fn open_current(config: &Config) -> anyhow::Result<DatabaseConnection> {
    let db = connect(config).await?;
    match database::schema_status(&db).await? {
        status if status.usable() => {
            warn_if_ahead(&status);
            Ok(db)
        }
        SchemaStatus::Fresh => {
            database::migrate_up(&db)
                .await
                .context("initialising the database")?;
            Ok(db)
        }
        status => Err(schema_error(&status)),
    }
}

/// The audit log for a CLI command: actor `cli:$USER`. When the file cannot be opened
/// (another user owns it) the entries still reach the database, with a warning.
pub fn audit_log(config: &Config, db: &DatabaseConnection) -> Arc<AuditLog> {
    let node = format!("{}-cli", config.server.hostname);
    AuditLog::open(&config.audit, db.clone(), node.clone()).unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; audit entries go to the database only");
        let database_only = AuditConfig {
            path: None,
            ..config.audit.clone()
        };
        AuditLog::open(&database_only, db.clone(), node).expect("no file to open")
    })
}

/// `cli:USER`, the actor of audit entries made from the command line.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Records a successful CLI action.
pub async fn audit(audit: &AuditLog, event: &'static str, target: impl std::fmt::Display) {
    audit
        .record(Entry::success(event, cli_actor()).target(target))
        .await;
}

/// The single column of every row `sql` returns, as text (integers in decimal): the ids or
/// keys the consistency check and the backup inventory compare.
pub async fn column<C: sea_orm::ConnectionTrait>(c: &C, sql: &str) -> anyhow::Result<Vec<String>> {
    let rows = c
        .query_all_raw(sea_orm::Statement::from_string(
            c.get_database_backend(),
            sql,
        ))
        .await?;
    rows.iter()
        .map(|r| {
            r.try_get_by_index::<String>(0)
                .or_else(|_| r.try_get_by_index::<i64>(0).map(|i| i.to_string()))
                .map_err(Into::into)
        })
        .collect()
}

/// The first column of the one row `sql` returns: a count, a setting, an identifier.
pub async fn scalar<T, C>(c: &C, sql: &str) -> anyhow::Result<T>
where
    T: sea_orm::TryGetable,
    C: sea_orm::ConnectionTrait,
{
    let row = c
        .query_one_raw(sea_orm::Statement::from_string(
            c.get_database_backend(),
            sql,
        ))
        .await?
        .with_context(|| format!("`{sql}` returned no row"))?;
    Ok(row.try_get_by_index(0)?)
}

pub fn schema_error(status: &SchemaStatus) -> anyhow::Error {
    match status {
        SchemaStatus::Behind { pending } => anyhow::anyhow!(
            "the database schema is older than this version of mairust ({} pending migration(s): {}); run `mairust migrate` first",
            pending.len(),
            pending.join(", ")
        ),
        SchemaStatus::Ahead { unknown, breaking } if breaking.is_empty() => anyhow::anyhow!(
            "the database schema is newer than this version of mairust ({} additive migration(s) it does not know: {}); this command needs the newer mairust",
            unknown.len(),
            unknown.join(", ")
        ),
        SchemaStatus::Ahead { breaking, .. } => anyhow::anyhow!(
            "the database schema is newer than this version of mairust and not compatible with it: migration(s) {} change what this version reads or writes; upgrade this node to the release that brought them (or roll the schema back with that release's `mairust migrate rollback`)",
            breaking.join(", ")
        ),
        SchemaStatus::Fresh | SchemaStatus::Current => anyhow::anyhow!("schema is usable"),
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    // A password in the query (`?password=...`, which PostgreSQL URLs accept too).
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            (base, format!("?{}", params.join("&")))
        }
        None => (url, String::new()),
    };
    match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            let redacted = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => userinfo.to_string(),
            };
            format!("{}{redacted}{}{query}", &base[..scheme + 3], &base[at..])
        }
        _ => format!("{base}{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_shown_the_rest_is() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/mail?sslmode=verify-full&sslrootcert=/ca.pem"),
            "postgres://app:***@db:5432/mail?sslmode=verify-full&sslrootcert=/ca.pem"
        );
        assert_eq!(
            redact("postgres://app@db/mail?password=s3cret&sslmode=require"),
            "postgres://app@db/mail?password=***&sslmode=require"
        );
        assert_eq!(
            redact("sqlite://./data/mairust.db?mode=rwc"),
            "sqlite://./data/mairust.db?mode=rwc"
        );
        assert_eq!(redact("postgres://a:b@c@h/d"), "postgres://a:***@h/d");
    }
}
