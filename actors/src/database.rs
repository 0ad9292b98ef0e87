//! Opening the database and checking its schema version against the migrations this
//! binary knows (SPEC O9).

use std::time::Duration;

use mairust_migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

use crate::config::DatabaseConfig;

/// Inserts `rows` `per_statement` at a time, so each statement stays within the
/// backends' bind-parameter limits (SQLite's is the lowest).
pub async fn insert_in_chunks<C, A>(
    txn: &C,
    rows: Vec<A>,
    per_statement: usize,
) -> Result<(), DbErr>
where
    C: ConnectionTrait,
    A: sea_orm::ActiveModelTrait + Clone,
{
    for chunk in rows.chunks(per_statement) {
        <A::Entity as sea_orm::EntityTrait>::insert_many(chunk.to_vec())
            .exec(txn)
            .await?;
    }
    Ok(())
}

pub async fn connect(config: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    connect_with(config, config.max_connections, 1, false).await
}

/// A connection of its own for the HealthMonitor's probes, so a probe never queues
/// behind the load for a slot of the main pool: a busy pool is overload, not an outage.
/// Opened lazily on PostgreSQL (SQLite opens its file at once).
pub async fn connect_probe(config: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    connect_with(config, 1, 0, true).await
}

async fn connect_with(
    config: &DatabaseConfig,
    max_connections: u32,
    min_connections: u32,
    lazy: bool,
) -> Result<DatabaseConnection, DbErr> {
    if let Some(path) = sqlite_path(&config.url) {
        prepare_sqlite_file(&config.url, &path);
    }
    let timeout = Duration::from_secs(config.connect_timeout_seconds);
    let mut options = ConnectOptions::new(config.url.clone());
    options
        .max_connections(max_connections)
        .min_connections(min_connections)
        .connect_lazy(lazy)
        .connect_timeout(timeout)
        .acquire_timeout(timeout)
        .sqlx_logging(false)
        // WAL + synchronous FULL: a commit is durable when it returns (SPEC M4).
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                .create_if_missing(true)
        });
    Database::connect(options).await
}

/// Creates the directory and, unless the URL opens it read-only, the empty database file
/// with mode 0600 before SQLite opens it: SQLite would create the file with 0644 minus
/// the umask, and gives its -wal and -shm the mode of the database file. An empty file
/// is an empty database to SQLite. Errors are left to the open that follows.
fn prepare_sqlite_file(url: &str, path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = crate::private_dir::create_private_dir(parent);
    }
    let read_only = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| p == "mode=ro"));
    if !read_only {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
}

/// The file of a `sqlite:` URL (`sqlite://data/mairust.db?mode=rwc` → `data/mairust.db`).
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// Whether any migration bookkeeping exists, checked without creating anything.
pub async fn has_schema(db: &DatabaseConnection) -> Result<bool, DbErr> {
    use sea_orm::Statement;
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'seaql_migrations'"
        }
        _ => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'seaql_migrations'"
        }
    };
    let n: i64 = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .map(|r| r.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
    Ok(n > 0)
}

/// Where the database's schema stands relative to this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// No migration applied yet: `serve` initialises it.
    Fresh,
    Current,
    /// Older schema: the operator runs `mairust migrate`.
    Behind {
        pending: Vec<String>,
    },
    /// Migrations this binary does not know: a newer version wrote this database.
    Ahead {
        unknown: Vec<String>,
    },
}

pub async fn schema_status(db: &DatabaseConnection) -> Result<SchemaStatus, DbErr> {
    let applied: Vec<String> = Migrator::get_migration_models(db)
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let unknown: Vec<String> = applied
        .iter()
        .filter(|v| !known.contains(v))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Ok(SchemaStatus::Ahead { unknown });
    }
    if applied.is_empty() {
        return Ok(SchemaStatus::Fresh);
    }
    let pending: Vec<String> = known
        .iter()
        .filter(|v| !applied.contains(v))
        .cloned()
        .collect();
    if pending.is_empty() {
        Ok(SchemaStatus::Current)
    } else {
        Ok(SchemaStatus::Behind { pending })
    }
}

/// Applies every pending migration.
pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// A cheap round trip, used by the health probe.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}
