//! The recipient directory: who is local, who may log in, who may send as whom.
//!
//! Everything the submission pipeline and an SMTP session ask about accounts goes
//! through [`Directory`], so a session can be driven without a database (an in-memory
//! directory in tests) and aliases or an external directory (LDAP) can come in later
//! behind the same questions. The server answers them from its database
//! ([`DatabaseConnection`] implements the trait).

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use mairust_entities::user;
use sea_orm::{DatabaseConnection, DbBackend, DbErr};

use crate::accounts::{self, RecipientLookup};
use crate::proto::Address;

/// Questions about this server's accounts. Each answer may come from a database, so
/// each may fail: callers answer a failure with a temporary error, never a refusal.
pub trait Directory: Send + Sync {
    /// Where mail for `address` goes: a local user's INBOX, nowhere (a local domain
    /// without such an enabled user), or another server (not one of our domains).
    fn recipient<'a>(
        &'a self,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<RecipientLookup, DbErr>>;

    /// The account whose address is `key` ([`Address::key`], or a login name in
    /// lowercase), disabled or not.
    fn user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<user::Model>, DbErr>>;

    /// Whether `domain` is one of this server's domains.
    fn is_local_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<bool, DbErr>>;

    /// The id of the user's mailbox `name` (`Junk` for mail the sender checks
    /// quarantine), if it has one.
    fn mailbox<'a>(
        &'a self,
        user_id: i64,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, DbErr>>;
}

impl Directory for DatabaseConnection {
    fn recipient<'a>(
        &'a self,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<RecipientLookup, DbErr>> {
        Box::pin(accounts::lookup_recipient(self, address))
    }

    fn user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<user::Model>, DbErr>> {
        Box::pin(accounts::find_user(self, key))
    }

    fn is_local_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<bool, DbErr>> {
        Box::pin(async move { Ok(accounts::find_domain(self, domain).await?.is_some()) })
    }

    fn mailbox<'a>(
        &'a self,
        user_id: i64,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, DbErr>> {
        Box::pin(accounts::mailbox_id(self, user_id, name))
    }
}

/// The directory the server uses for `db`: [`SqliteDirectory`] for a SQLite file, the
/// pool itself otherwise.
pub fn for_database(db: &DatabaseConnection) -> Arc<dyn Directory> {
    match crate::sqlite::file_of(db) {
        Some(path) => Arc::new(SqliteDirectory {
            db: db.clone(),
            path,
        }),
        None => Arc::new(db.clone()),
    }
}

/// SQLite in a file: a recipient lookup reads it on the caller's thread, through a
/// connection that thread keeps, instead of a round trip to the pool's worker thread.
/// It is an indexed read of a WAL database, which no writer blocks: microseconds (a few
/// pages from the OS cache: the connection's own cache is dropped after each commit of
/// another connection), and every RCPT sees the accounts as committed at that moment (a
/// user removed by the CLI is refused at once). A read that fails, or finds the file
/// locked (it waits at most [`READ_BUSY`]), goes through the pool instead, which waits
/// and reports as before. The cost of reading on the session's thread: the sessions of
/// that thread wait while it reads; the worst case is SQLite's own retry while another
/// connection resets or recovers the WAL (after a crash, at the first read), which does
/// not heed the busy timeout. The other questions (logins, senders) use the pool.
pub struct SqliteDirectory {
    db: DatabaseConnection,
    path: PathBuf,
}

/// How long a lookup on the caller's thread waits for a lock before leaving the read to
/// the pool (in WAL mode readers wait only while the WAL is reset or recovered).
const READ_BUSY: Duration = Duration::from_millis(10);

thread_local! {
    /// This thread's read connections, by database file.
    static READERS: RefCell<HashMap<PathBuf, rusqlite::Connection>> = RefCell::new(HashMap::new());
}

impl SqliteDirectory {
    fn read_recipient(&self, address: &Address) -> rusqlite::Result<RecipientLookup> {
        READERS.with(|readers| {
            let mut readers = readers.borrow_mut();
            let conn = match readers.entry(self.path.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(crate::sqlite::open(&self.path, READ_BUSY)?),
            };
            let result = recipient(conn, address);
            if result.is_err() {
                // Never reused in the state a failure left it in.
                readers.remove(&self.path);
            }
            result
        })
    }
}

fn recipient(conn: &rusqlite::Connection, address: &Address) -> rusqlite::Result<RecipientLookup> {
    use rusqlite::OptionalExtension;
    use sea_orm::QueryTrait;
    let key = address.key();
    let query = DbBackend::Sqlite.build(&accounts::recipient_query(&key));
    let row = conn
        .prepare_cached(&query.sql)?
        .query_row(crate::sqlite::bind(&query), |row| {
            Ok(accounts::RecipientRow {
                user_id: row.get("user_id")?,
                disabled: row.get("disabled")?,
                inbox_id: row.get("inbox_id")?,
            })
        })
        .optional()?;
    if let Some(row) = row {
        return Ok(row.lookup(key));
    }
    let query = accounts::domain_query(&address.domain).build(DbBackend::Sqlite);
    let domain = conn
        .prepare_cached(&query.sql)?
        .query_row(crate::sqlite::bind(&query), |_| Ok(()))
        .optional()?;
    Ok(match domain {
        Some(()) => RecipientLookup::UnknownUser,
        None => RecipientLookup::Remote,
    })
}

impl Directory for SqliteDirectory {
    fn recipient<'a>(
        &'a self,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<RecipientLookup, DbErr>> {
        match self.read_recipient(address) {
            Ok(found) => Box::pin(std::future::ready(Ok(found))),
            Err(e) => {
                tracing::debug!(component = "directory", error = %e, "recipient lookup on this thread failed; asking the pool");
                self.db.recipient(address)
            }
        }
    }

    fn user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<user::Model>, DbErr>> {
        self.db.user(key)
    }

    fn is_local_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<bool, DbErr>> {
        self.db.is_local_domain(domain)
    }

    fn mailbox<'a>(
        &'a self,
        user_id: i64,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, DbErr>> {
        self.db.mailbox(user_id, name)
    }
}
