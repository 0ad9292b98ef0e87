//! SQLite files opened directly (rusqlite, the same SQLite library as the pool's), for
//! the two hot paths that a round trip to the pool's worker thread made slow: the
//! StorageActor's row writer (`storage::sqlite_writer`) and the directory's recipient
//! lookups (`submission::directory`). Statements are built with sea-query as everywhere
//! else; only their execution is here.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSql, ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, ParamsFromIter};
use sea_orm::{DbErr, RuntimeErr, Statement, Value};

/// Distinct statements kept prepared per connection (the row writer uses about ten).
const STATEMENT_CACHE: usize = 64;

/// Opens the database file at `path` with the pool's settings (`database::connect`):
/// WAL, `synchronous = FULL` (a COMMIT is durable when it returns), foreign keys, and
/// `busy` as the time a statement waits for another connection's lock.
pub fn open(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy)?;
    // journal_mode is a property of the file (the pool set WAL); asked again so that a
    // file in another mode is put in WAL rather than written in it.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The file a SQLite connection of the pool opened, when it can be opened directly: a
/// file that holds the server's tables. `None` for any other backend, and for a
/// database the pool opened in memory (`:memory:`, `mode=memory`: no other connection
/// sees it) or otherwise than as that file.
pub fn file_of(db: &sea_orm::DatabaseConnection) -> Option<std::path::PathBuf> {
    if db.get_database_backend() != sea_orm::DbBackend::Sqlite {
        return None;
    }
    let options = db.get_sqlite_connection_pool().connect_options();
    let path = options.get_filename().to_path_buf();
    // sqlx names an in-memory database `file:sqlx-in-memory-N` or `:memory:`.
    if path
        .to_str()
        .is_none_or(|p| p.starts_with("file:") || p == ":memory:")
    {
        return None;
    }
    let holds_tables = || -> rusqlite::Result<bool> {
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    match holds_tables() {
        Ok(true) => Some(path),
        Ok(false) | Err(_) => None,
    }
}

/// The values of `statement`, bound as the pool binds them for SQLite.
pub fn bind(statement: &Statement) -> ParamsFromIter<impl Iterator<Item = Bind<'_>>> {
    let values = statement.values.as_ref().map_or(&[][..], |v| &v.0[..]);
    rusqlite::params_from_iter(values.iter().map(Bind))
}

/// A sea-query value bound as sqlx-sqlite binds it: times as RFC 3339 text (so they
/// compare and read back as the pool's), booleans as integers.
pub struct Bind<'a>(&'a Value);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use chrono::SecondsFormat::AutoSi;
        let null = ToSqlOutput::Owned(SqlValue::Null);
        Ok(match self.0 {
            Value::Bool(v) => v.map_or(null, |b| ToSqlOutput::from(i64::from(b))),
            Value::TinyInt(v) => v.map_or(null, |n| ToSqlOutput::from(i64::from(n))),
            Value::SmallInt(v) => v.map_or(null, |n| ToSqlOutput::from(i64::from(n))),
            Value::Int(v) => v.map_or(null, |n| ToSqlOutput::from(i64::from(n))),
            Value::BigInt(v) => v.map_or(null, ToSqlOutput::from),
            Value::TinyUnsigned(v) => v.map_or(null, |n| ToSqlOutput::from(i64::from(n))),
            Value::SmallUnsigned(v) => v.map_or(null, |n| ToSqlOutput::from(i64::from(n))),
            Value::Unsigned(v) => v.map_or(null, |n| ToSqlOutput::from(i64::from(n))),
            // sqlx binds a u64 as i64 too, failing above i64::MAX.
            Value::BigUnsigned(v) => match v {
                None => null,
                Some(n) => ToSqlOutput::from(
                    i64::try_from(*n)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                ),
            },
            Value::Float(v) => v.map_or(null, |x| ToSqlOutput::from(f64::from(x))),
            Value::Double(v) => v.map_or(null, ToSqlOutput::from),
            Value::Char(v) => v.map_or(null, |c| ToSqlOutput::from(c.to_string())),
            Value::String(v) => v.as_deref().map_or(null, |s| {
                ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
            }),
            Value::Bytes(v) => v
                .as_deref()
                .map_or(null, |b| ToSqlOutput::Borrowed(ValueRef::Blob(b))),
            Value::ChronoDateTimeWithTimeZone(v) => v.map_or(null, |t| {
                ToSqlOutput::from(t.to_rfc3339_opts(AutoSi, false))
            }),
            Value::ChronoDateTimeUtc(v) => v.map_or(null, |t| {
                ToSqlOutput::from(t.to_rfc3339_opts(AutoSi, false))
            }),
            other => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    format!("no SQLite binding for {other:?}").into(),
                ));
            }
        })
    }
}

pub fn sqlite_error(e: rusqlite::Error) -> DbErr {
    internal(&format!("sqlite: {e}"))
}

pub fn internal(text: &str) -> DbErr {
    DbErr::Exec(RuntimeErr::Internal(text.to_string()))
}
