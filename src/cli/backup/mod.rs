//! `mairust backup` and `mairust restore` (SPEC O6).
//!
//! An archive is a tar file:
//!
//! - `database/mairust.sqlite` (SQLite, a `VACUUM INTO` copy) or
//!   `database/mairust.pgdump` (PostgreSQL, `pg_dump -Fc`);
//! - `config/config.yaml`, the configuration the backup ran with (not with `--db-only`);
//! - `objects/<key>`, every message body the database snapshot refers to (not with
//!   `--db-only` or `--skip-objects`);
//! - `manifest.json`, last: format, versions, applied migrations, row counts and the
//!   size and SHA-256 of every other entry.
//!
//! Consistency while the server runs: the database copy is one snapshot (SQLite's
//! VACUUM INTO; on PostgreSQL a repeatable-read transaction whose exported snapshot
//! `pg_dump --snapshot` uses), and the object list is read from that same snapshot.
//! Bodies are immutable, so copying them afterwards gives exactly the snapshot's mail; a
//! body deleted in between (a delivered queue message) is listed in the manifest as
//! missing, which `mairust db check` reports after a restore.
//!
//! Restore reads the whole archive and checks every checksum before it writes
//! anything (an entry that appears twice, is unlisted, is not a plain file or has a
//! name backup never writes is refused), refuses a non-empty target without `--force`,
//! and refuses while a server runs on the target (its `server.pid_file`). It then
//! stages and checks the database copy, stores the bodies, and swaps the database in at
//! once, so that a failure at any point leaves the previous data as it was (see
//! [`restore()`]).
//!
//! Layout: this file holds the two commands' arguments, the manifest and what both
//! commands share; `create` writes an archive, `restore` reads one back; `archive` is
//! the tar format (writing entries with their checksums, checking names and checksums
//! on the way back); `snapshot` takes the database copy and stages a SQLite one for
//! restore; `postgres` runs the PostgreSQL client tools (`pg_dump`, `pg_restore`,
//! `psql`) and checks their versions.

mod archive;
mod create;
mod postgres;
mod restore;
mod snapshot;

pub use restore::restore;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mairust_actors::config::Config;
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};

use crate::cli;

/// Object reads (backup) or writes (restore) in flight at once.
const IN_FLIGHT: usize = 8;

/// Archive format version written in the manifest.
const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const SQLITE_FILE: &str = "database/mairust.sqlite";
const PGDUMP_FILE: &str = "database/mairust.pgdump";
const CONFIG_FILE: &str = "config/config.yaml";
const OBJECTS: &str = "objects/";
/// Tables counted in the manifest.
const TABLES: [&str; 9] = [
    "domains",
    "users",
    "mailboxes",
    "messages",
    "mailbox_messages",
    "queue_entries",
    "api_keys",
    "hooks",
    "audit_log",
];

#[derive(Args)]
pub struct BackupArgs {
    /// The archive to write (a tar file); written under a temporary name, then renamed.
    #[arg(long)]
    output: PathBuf,
    /// Only the database (no configuration, no message bodies).
    #[arg(long)]
    db_only: bool,
    /// Leave the message bodies out (for S3 stores backed up by their own means).
    #[arg(long)]
    skip_objects: bool,
    /// Print the manifest as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The archive written by `mairust backup`.
    #[arg(long)]
    input: PathBuf,
    /// Restore over a database or object store that already holds data.
    #[arg(long)]
    force: bool,
    /// Also write the archived configuration to this file.
    #[arg(long)]
    config_to: Option<PathBuf>,
    /// Print the manifest as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub mairust_version: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    /// sqlite or postgres.
    pub database: String,
    /// Applied migrations, oldest first; the last is the schema version.
    pub migrations: Vec<String>,
    /// fs or s3: where the bodies came from.
    pub storage: String,
    pub includes_config: bool,
    pub includes_objects: bool,
    pub counts: BTreeMap<String, u64>,
    /// Bodies the snapshot referred to that were gone when they were copied.
    pub missing_objects: Vec<String>,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn schema_version(&self) -> &str {
        self.migrations
            .last()
            .map(String::as_str)
            .unwrap_or("(empty)")
    }
}

/// A new file only its owner can read: archives and restored databases hold password
/// hashes, mail and the configuration's secrets.
fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// What a database snapshot holds: the manifest's counts and migrations, and the
/// bodies to copy.
struct Inventory {
    keys: Vec<String>,
    counts: BTreeMap<String, u64>,
    migrations: Vec<String>,
}

async fn inventory<C: ConnectionTrait>(c: &C) -> anyhow::Result<Inventory> {
    let keys = cli::column(c, "SELECT object_key FROM messages ORDER BY object_key").await?;
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let n: i64 = cli::scalar(c, &format!("SELECT COUNT(*) AS n FROM {table}")).await?;
        counts.insert(table.to_string(), n as u64);
    }
    let migrations =
        cli::column(c, "SELECT version FROM seaql_migrations ORDER BY version").await?;
    Ok(Inventory {
        keys,
        counts,
        migrations,
    })
}

/// A progress bar on a terminal, nothing otherwise.
fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// `mairust backup`: the archive is written under a temporary name, removed again when
/// anything fails, and renamed to `--output` only once complete.
pub async fn backup(config: &Config, config_path: &Path, args: BackupArgs) -> anyhow::Result<()> {
    let partial = args.output.with_extension("tar.partial");
    let result = create::write(config, config_path, &args, &partial).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The manifest for people: what the archive holds and what it lacks.
fn print_summary(m: &Manifest) {
    println!(
        "  database: {} at schema {}; storage: {}",
        m.database,
        m.schema_version(),
        m.storage
    );
    let counts: Vec<String> = m.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  counts: {}", counts.join(", "));
    if !m.includes_objects {
        println!("  message bodies not included");
    }
    if !m.missing_objects.is_empty() {
        println!(
            "  {} bodies were deleted while the backup ran (delivered queue mail): {}",
            m.missing_objects.len(),
            m.missing_objects.join(", ")
        );
    }
}
