//! Opening the database and checking its schema version against the migrations this
//! binary knows (SPEC O9), and whether a newer schema still suits this binary (SPEC
//! O10's rolling upgrade: migrations recorded as additive in `schema_compat`).

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
    table_exists(db, "seaql_migrations").await
}

/// Whether `table` exists (in the current schema on PostgreSQL). `table` is one of ours,
/// never input.
async fn table_exists(db: &DatabaseConnection, table: &str) -> Result<bool, DbErr> {
    use sea_orm::Statement;
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Sqlite => format!(
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
        ),
        _ => format!(
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '{table}'"
        ),
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
    /// When none of them is `breaking` (all recorded as additive), this binary may keep
    /// serving it (a rolling upgrade under way).
    Ahead {
        unknown: Vec<String>,
        breaking: Vec<String>,
    },
}

impl SchemaStatus {
    /// This binary can work on the schema: current, or newer by additive migrations only.
    pub fn usable(&self) -> bool {
        match self {
            SchemaStatus::Current => true,
            SchemaStatus::Ahead { breaking, .. } => breaking.is_empty(),
            SchemaStatus::Fresh | SchemaStatus::Behind { .. } => false,
        }
    }
}

pub async fn schema_status(db: &DatabaseConnection) -> Result<SchemaStatus, DbErr> {
    let applied = applied_versions(db).await?;
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
        let additive = recorded_additive(db).await?;
        let breaking = unknown
            .iter()
            .filter(|v| !additive.contains(v))
            .cloned()
            .collect();
        return Ok(SchemaStatus::Ahead { unknown, breaking });
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

/// The migrations `schema_compat` records as additive; none when the table is absent
/// (a schema older than the record, whose unknown migrations all count as breaking).
async fn recorded_additive(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    use sea_orm::Statement;
    if !table_exists(db, "schema_compat").await? {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT version FROM schema_compat WHERE additive",
        ))
        .await?;
    rows.iter().map(|r| r.try_get("", "version")).collect()
}

/// The applied migrations' names, read with a plain SELECT (sea-orm-migration's own
/// reader first runs `CREATE TABLE IF NOT EXISTS`, DDL that a health probe must not
/// run every few seconds, nor need the privilege for). None applied when the table is
/// absent.
async fn applied_versions(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    use sea_orm::Statement;
    if !has_schema(db).await? {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT version FROM seaql_migrations ORDER BY version",
        ))
        .await?;
    rows.iter().map(|r| r.try_get("", "version")).collect()
}

/// Writes the [`mairust_migration::Compat`] of every migration this binary knows into
/// `schema_compat` (once the table exists), overwriting what an earlier release said of
/// the same name. Rows of migrations not applied yet are written too: `migrate_up`
/// calls this before applying, so no node of an older release ever sees an applied
/// migration without its row (it would count as breaking and turn that node unready).
/// Only applied versions are ever consulted.
pub async fn record_compat(db: &DatabaseConnection) -> Result<(), DbErr> {
    use sea_orm::Statement;
    if !table_exists(db, "schema_compat").await? {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => {
            "INSERT INTO schema_compat (version, additive) VALUES ($1, $2) ON CONFLICT (version) DO UPDATE SET additive = excluded.additive"
        }
        _ => {
            "INSERT INTO schema_compat (version, additive) VALUES (?, ?) ON CONFLICT (version) DO UPDATE SET additive = excluded.additive"
        }
    };
    for (name, compat) in mairust_migration::compatibility() {
        let additive = compat == mairust_migration::Compat::Additive;
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [name.into(), additive.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Applies every pending migration, recording what each means for older binaries
/// before (see [`record_compat`]) and after (the record's own table may be among them).
/// The record is written after a failed migration too.
pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    record_compat(db).await?;
    let applied = Migrator::up(db, None).await;
    let recorded = record_compat(db).await;
    applied.and(recorded)
}

/// A cheap round trip, used by the health probe.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}
