//! SQLite's row writer: one thread owning a connection of its own, which runs each row
//! transaction of the StorageActor whole. A batch costs one hand-over to the thread and
//! one answer back; through the pool it cost a round trip to the pool's worker thread
//! for each statement, BEGIN and COMMIT included (issue 15's profile: about 14 context
//! switches a message).
//!
//! The statements are the ones [`super::rows`] builds for every backend, their values
//! bound as the pool binds them ([`crate::sqlite::bind`]).
//!
//! The connection has the pool's settings ([`crate::sqlite::open`]: a COMMIT is durable
//! when it returns). Each transaction begins
//! IMMEDIATE, taking the write lock before its first statement. After any failure the
//! connection is closed, and the next transaction opens a new one: a connection is never
//! reused in a state a failure left it in.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use sea_orm::Statement;
use tokio::sync::oneshot;

use super::error::RowFailure;
use crate::sqlite::{bind, internal, open, sqlite_error};

/// How long a transaction waits for another connection's write lock (the pool's
/// `busy_timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The handle the StorageActor holds (kept across its restarts); the thread ends once
/// every clone is dropped.
#[derive(Clone)]
pub(super) struct SqliteWriter {
    path: Arc<PathBuf>,
    jobs: Arc<Mutex<mpsc::Sender<Job>>>,
}

struct Job {
    statements: Vec<Statement>,
    reply: oneshot::Sender<Result<(), RowFailure>>,
}

impl SqliteWriter {
    /// Starts the thread for the database file at `path` (opened at the first
    /// transaction, so a failure to open is that transaction's error).
    pub(super) fn spawn(path: PathBuf) -> std::io::Result<SqliteWriter> {
        let jobs = start_thread(path.clone())?;
        Ok(SqliteWriter {
            path: Arc::new(path),
            jobs: Arc::new(Mutex::new(jobs)),
        })
    }

    /// Runs `statements` in one transaction; `Ok` once it is committed and durable.
    ///
    /// Panics when the statements made the thread panic: the outcome is unknown, as
    /// when the transaction ran on the actor's own task, so the actor fails with it and
    /// its restart recovers the journal.
    pub(super) async fn transaction(&self, statements: Vec<Statement>) -> Result<(), RowFailure> {
        let (reply, answer) = oneshot::channel();
        self.hand_over(Job { statements, reply })?;
        match answer.await {
            Ok(result) => result,
            Err(_) => panic!("the SQLite writer panicked during a transaction"),
        }
    }

    /// Gives the job to the thread, starting a new one if it is gone.
    fn hand_over(&self, job: Job) -> Result<(), RowFailure> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let Err(mpsc::SendError(job)) = jobs.send(job) else {
            return Ok(());
        };
        let gone = |e: std::io::Error| {
            RowFailure::Before(internal(&format!(
                "cannot start the SQLite writer thread: {e}"
            )))
        };
        *jobs = start_thread(self.path.as_ref().clone()).map_err(gone)?;
        jobs.send(job)
            .map_err(|_| RowFailure::Before(internal("the SQLite writer thread is gone")))
    }
}

fn start_thread(path: PathBuf) -> std::io::Result<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || run(&path, queue))?;
    Ok(jobs)
}

fn run(path: &std::path::Path, queue: mpsc::Receiver<Job>) {
    let mut connection: Option<Connection> = None;
    while let Ok(job) = queue.recv() {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let conn = match connection.take() {
                Some(conn) => conn,
                None => {
                    open(path, BUSY_TIMEOUT).map_err(|e| RowFailure::Before(sqlite_error(e)))?
                }
            };
            let result = transaction(&conn, &job.statements);
            if result.is_ok() {
                connection = Some(conn);
            }
            result
        }));
        // A panic drops the reply unanswered (and the connection): the caller fails.
        if let Ok(result) = result {
            let _ = job.reply.send(result);
        }
    }
}

fn transaction(conn: &Connection, statements: &[Statement]) -> Result<(), RowFailure> {
    let before = |e| RowFailure::Before(sqlite_error(e));
    let txn = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(before)?;
    for statement in statements {
        let mut prepared = txn.prepare_cached(&statement.sql).map_err(before)?;
        prepared.execute(bind(statement)).map_err(before)?;
    }
    // Supervision tests: the thread panics with the transaction not yet committed.
    crate::failpoint::failpoint!("sqlite_writer");
    txn.commit()
        .map_err(|e| RowFailure::Commit(sqlite_error(e)))
}
