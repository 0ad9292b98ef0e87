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
//! anything, refuses a non-empty target without `--force`, and refuses while a server
//! runs on the target (its `server.pid_file`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mairust_actors::audit::Entry;
use mairust_actors::config::{Config, StorageBackend};
use mairust_actors::database;
use mairust_actors::storage::BodyStore;
use mairust_actors::storage::envelope::hex;
use mairust_migration::MigratorTrait;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, IsolationLevel, Statement, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// The connection URL without its password, and the password (for `PGPASSWORD`): a
/// password on a command line is readable by every local user.
fn pg_url_and_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return (url.to_string(), None);
    };
    (
        format!("{scheme}://{user}@{host}{tail}"),
        Some(percent_decode(password)),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `pg_dump` / `pg_restore` on `url`, the password in the environment.
fn pg_command(program: &str, url: &str) -> tokio::process::Command {
    let (url, password) = pg_url_and_password(url);
    let mut cmd = tokio::process::Command::new(program);
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    cmd.arg("-d").arg(url);
    cmd
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

/// What a database snapshot holds.
struct Inventory {
    keys: Vec<String>,
    counts: BTreeMap<String, u64>,
    migrations: Vec<String>,
}

async fn inventory<C: ConnectionTrait>(c: &C) -> anyhow::Result<Inventory> {
    let backend = c.get_database_backend();
    let keys = super::column(c, "SELECT object_key FROM messages ORDER BY object_key").await?;
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let row = c
            .query_one_raw(Statement::from_string(
                backend,
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await?
            .context("COUNT returned no row")?;
        counts.insert(table.to_string(), row.try_get::<i64>("", "n")? as u64);
    }
    let migrations =
        super::column(c, "SELECT version FROM seaql_migrations ORDER BY version").await?;
    Ok(Inventory {
        keys,
        counts,
        migrations,
    })
}

/// Copies the database into `dir` as one snapshot and lists what it holds.
async fn snapshot(
    config: &Config,
    db: &DatabaseConnection,
    dir: &Path,
) -> anyhow::Result<(PathBuf, &'static str, Inventory)> {
    if config.database.is_sqlite() {
        let copy = dir.join("mairust.sqlite");
        let quoted = copy.display().to_string().replace('\'', "''");
        db.execute_unprepared(&format!("VACUUM INTO '{quoted}'"))
            .await
            .context("VACUUM INTO (SQLite snapshot)")?;
        let snap = sea_orm::Database::connect(format!("sqlite://{}?mode=ro", copy.display()))
            .await
            .context("opening the SQLite snapshot")?;
        let inv = inventory(&snap).await?;
        snap.close().await.ok();
        return Ok((copy, SQLITE_FILE, inv));
    }
    let dump = dir.join("mairust.pgdump");
    let txn = db
        .begin_with_config(
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        )
        .await?;
    let snapshot_id: String = txn
        .query_one_raw(Statement::from_string(
            txn.get_database_backend(),
            "SELECT pg_export_snapshot() AS s",
        ))
        .await?
        .context("pg_export_snapshot returned no row")?
        .try_get("", "s")?;
    let inv = inventory(&txn).await?;
    let out = pg_command("pg_dump", &config.database.url)
        .args(["-Fc", "--no-owner", "--no-privileges", "--snapshot"])
        .arg(&snapshot_id)
        .arg("-f")
        .arg(&dump)
        .output()
        .await
        .context("running pg_dump (install the PostgreSQL client tools)")?;
    txn.commit().await?;
    if !out.status.success() {
        bail!(
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((dump, PGDUMP_FILE, inv))
}

/// Appends in-memory bytes, recording their size and checksum.
fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    files: &mut Vec<FileEntry>,
    path: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    header.set_cksum();
    tar.append_data(&mut header, path, bytes)
        .with_context(|| format!("writing {path} to the archive"))?;
    files.push(FileEntry {
        path: path.to_string(),
        size: bytes.len() as u64,
        sha256: hex(&Sha256::digest(bytes)),
    });
    Ok(())
}

/// Appends a file from disk, streaming it, recording its size and checksum.
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    files: &mut Vec<FileEntry>,
    path: &str,
    source: &Path,
) -> anyhow::Result<()> {
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(source)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let mut f = std::fs::File::open(source)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    header.set_cksum();
    tar.append_data(&mut header, path, &mut f)
        .with_context(|| format!("writing {path} to the archive"))?;
    files.push(FileEntry {
        path: path.to_string(),
        size,
        sha256: hex(&hasher.finalize()),
    });
    Ok(())
}

pub async fn backup(config: &Config, config_path: &Path, args: BackupArgs) -> anyhow::Result<()> {
    let partial = args.output.with_extension("tar.partial");
    let result = write_backup(config, config_path, &args, &partial).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

async fn write_backup(
    config: &Config,
    config_path: &Path,
    args: &BackupArgs,
    partial: &Path,
) -> anyhow::Result<()> {
    let db = super::open_existing(config).await?;
    // The snapshot goes beside the archive: same filesystem, not a small /tmp.
    let dir = args
        .output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".mairust-backup-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary directory in {}", dir.display()))?;
    let (db_file, db_entry, inv) = snapshot(config, &db, work.path()).await?;
    let out = private_file(partial)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
    let mut files = Vec::new();
    append_file(&mut tar, &mut files, db_entry, &db_file)?;
    if !args.db_only {
        let text = std::fs::read(config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        append_bytes(&mut tar, &mut files, CONFIG_FILE, &text)?;
    }
    let with_objects = !(args.db_only || args.skip_objects);
    let mut missing = Vec::new();
    if with_objects {
        let store = BodyStore::open(&config.storage).context("opening the object store")?;
        let bar = progress(inv.keys.len() as u64, "objects");
        // Reads run ahead of the (sequential) archive writes: S3 is latency-bound.
        let mut reads = futures::stream::iter(inv.keys.iter())
            .map(|key| {
                let store = &store;
                async move { (key, store.get(key).await) }
            })
            .buffered(IN_FLIGHT);
        while let Some((key, read)) = reads.next().await {
            match read {
                Ok(bytes) => {
                    append_bytes(&mut tar, &mut files, &format!("{OBJECTS}{key}"), &bytes)?
                }
                Err(mairust_actors::storage::bodies::BodyError::NotFound(_)) => {
                    missing.push(key.clone())
                }
                Err(e) => bail!("reading object {key}: {e}"),
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    let mut counts = inv.counts;
    let copied = if with_objects {
        inv.keys.len() - missing.len()
    } else {
        0
    };
    counts.insert("objects".into(), copied as u64);
    let manifest = Manifest {
        format: FORMAT,
        mairust_version: env!("CARGO_PKG_VERSION").into(),
        created_at: chrono::Utc::now(),
        hostname: config.server.hostname.clone(),
        database: if config.database.is_sqlite() {
            "sqlite".into()
        } else {
            "postgres".into()
        },
        migrations: inv.migrations,
        storage: match config.storage.backend {
            StorageBackend::Fs => "fs".into(),
            StorageBackend::S3 => "s3".into(),
        },
        includes_config: !args.db_only,
        includes_objects: with_objects,
        counts,
        missing_objects: missing,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    let mut ignored = Vec::new();
    append_bytes(&mut tar, &mut ignored, MANIFEST, &json)?;
    let mut writer = tar.into_inner().context("finishing the archive")?;
    writer.flush()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .context("flushing the archive to disk")?;
    std::fs::rename(partial, &args.output)
        .with_context(|| format!("renaming to {}", args.output.display()))?;
    let audit = super::audit_log(config, &db);
    audit
        .record(
            Entry::success("backup.create", super::cli_actor())
                .target(args.output.display())
                .detail("messages", manifest.counts["messages"])
                .detail("objects", manifest.counts["objects"])
                .detail("db_only", args.db_only),
        )
        .await;
    db.close().await.ok();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        let size = std::fs::metadata(&args.output)
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "backup written to {} ({} bytes)",
            args.output.display(),
            size
        );
        print_summary(&manifest);
    }
    Ok(())
}

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

/// Reads the whole archive, checks every entry against the manifest, and returns it.
pub fn verify(path: &Path) -> anyhow::Result<Manifest> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Vec<u8>> = None;
    let damaged = |e: std::io::Error| {
        anyhow::anyhow!(
            "{} is not a readable backup archive (truncated or damaged): {e}",
            path.display()
        )
    };
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let name = entry
            .path()
            .map_err(damaged)?
            .to_string_lossy()
            .into_owned();
        if name == MANIFEST {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(damaged)?;
            manifest = Some(bytes);
            continue;
        }
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut entry, &mut HashWriter(&mut hasher)).map_err(damaged)?;
        seen.insert(name, (size, hex(&hasher.finalize())));
    }
    let Some(bytes) = manifest else {
        bail!(
            "{} has no manifest.json: truncated, or not made by `mairust backup`",
            path.display()
        );
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).context("manifest.json is not a valid manifest")?;
    if manifest.format != FORMAT {
        bail!(
            "backup format {} is not supported by this version (format {FORMAT})",
            manifest.format
        );
    }
    for f in &manifest.files {
        match seen.remove(&f.path) {
            None => bail!(
                "{} is listed in the manifest but missing from the archive",
                f.path
            ),
            Some((size, sha)) if size != f.size || sha != f.sha256 => bail!(
                "{} is damaged: {size} bytes with SHA-256 {sha}, the manifest says {} bytes with {}",
                f.path,
                f.size,
                f.sha256
            ),
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.keys().next() {
        bail!("{extra} is in the archive but not in its manifest");
    }
    let known: Vec<String> = mairust_migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    if let Some(unknown) = manifest.migrations.iter().find(|m| !known.contains(m)) {
        bail!(
            "the backup's schema has migration {unknown}, unknown to this mairust {}: restore it with the version that made it ({})",
            env!("CARGO_PKG_VERSION"),
            manifest.mairust_version
        );
    }
    Ok(manifest)
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What already lives in the restore target.
async fn target_contents(config: &Config, store: &BodyStore) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    if let Some(path) = database::sqlite_path(&config.database.url) {
        if path.exists() && std::fs::metadata(&path)?.len() > 0 {
            found.push(format!("the SQLite database {} exists", path.display()));
        }
    } else {
        let db = database::connect(&config.database).await.with_context(|| {
            format!(
                "cannot connect to the database ({})",
                super::redact(&config.database.url)
            )
        })?;
        let tables = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public'",
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        db.close().await.ok();
        if tables > 0 {
            found.push(format!("the PostgreSQL database has {tables} tables"));
        }
    }
    if !store.list("messages/").await?.is_empty() {
        found.push("the object store holds message bodies".into());
    }
    Ok(found)
}

/// Replaces the schema's contents with the dump's, in one transaction: a restore that
/// fails leaves the database as it was, and tables of a newer schema do not linger.
async fn pg_restore(config: &Config, dump: &Path) -> anyhow::Result<()> {
    let db = database::connect(&config.database).await?;
    db.execute_unprepared("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        .await
        .context("emptying the target schema")?;
    db.close().await.ok();
    let out = pg_command("pg_restore", &config.database.url)
        .args([
            "--single-transaction",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
        ])
        .arg(dump)
        .output()
        .await
        .context("running pg_restore (install the PostgreSQL client tools)")?;
    if !out.status.success() {
        bail!(
            "pg_restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Refuses while a server runs with this configuration: its pid file names a live
/// process, or its HTTP address answers.
async fn refuse_if_running(config: &Config) -> anyhow::Result<()> {
    if let Some(pid_file) = &config.server.pid_file
        && let Ok(text) = std::fs::read_to_string(pid_file)
        && let Ok(pid) = text.trim().parse::<i32>()
        && pid > 0
    {
        // SAFETY: signal 0 only checks that the process exists; EPERM means it exists
        // and belongs to another user.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive {
            bail!(
                "a server is running on this configuration (process {pid}, {}): stop it before restoring",
                pid_file.display()
            );
        }
    }
    if super::diag::server_answers(config).await {
        bail!(
            "a server answers at http.address {}: stop it before restoring",
            config.http.address
        );
    }
    Ok(())
}

pub async fn restore(config: &Config, args: RestoreArgs) -> anyhow::Result<()> {
    let manifest = verify(&args.input)?;
    let target_db = if config.database.is_sqlite() {
        "sqlite"
    } else {
        "postgres"
    };
    if manifest.database != target_db {
        bail!(
            "the backup holds a {} database but database.url is {target_db}: restore into the same kind",
            manifest.database
        );
    }
    refuse_if_running(config).await?;
    // A restore may be the first use of a new machine's store directory.
    let store = BodyStore::create(&config.storage).context("opening the object store")?;
    let present = target_contents(config, &store).await?;
    if !present.is_empty() && !args.force {
        bail!(
            "the restore target is not empty ({}); use --force to replace it",
            present.join("; ")
        );
    }
    if let Some(path) = &args.config_to
        && path.exists()
        && !args.force
    {
        bail!("{} exists; use --force to overwrite it", path.display());
    }
    if args.config_to.is_some() && !manifest.includes_config {
        bail!("the backup has no configuration (made with --db-only)");
    }
    // Everything checked: now write.
    let work = tempfile::tempdir().context("temporary directory")?;
    let file = std::fs::File::open(&args.input)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let bar = progress(manifest.files.len() as u64, "restoring");
    let mut objects = 0u64;
    let mut puts = futures::stream::FuturesUnordered::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name == SQLITE_FILE {
            let path = database::sqlite_path(&config.database.url)
                .context("database.url names no SQLite file")?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let partial = path.with_extension("restoring");
            let mut out = private_file(&partial)?;
            std::io::copy(&mut entry, &mut out)?;
            out.sync_all()?;
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            std::fs::rename(&partial, &path)?;
        } else if name == PGDUMP_FILE {
            // The database first (it comes first in the archive), then the bodies.
            let dump = work.path().join("mairust.pgdump");
            let mut out = std::fs::File::create(&dump)?;
            std::io::copy(&mut entry, &mut out)?;
            out.sync_all()?;
            pg_restore(config, &dump).await?;
        } else if name == CONFIG_FILE {
            if let Some(path) = &args.config_to {
                let mut out = private_file(path)?;
                std::io::copy(&mut entry, &mut out)?;
            }
        } else if let Some(key) = name.strip_prefix(OBJECTS) {
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes)?;
            // Up to IN_FLIGHT writes at once while the archive is read on.
            if puts.len() >= IN_FLIGHT
                && let Some(done) = puts.next().await
            {
                done?;
            }
            let (store, key) = (&store, key.to_string());
            puts.push(async move {
                store
                    .put(&key, Bytes::from(bytes))
                    .await
                    .with_context(|| format!("storing object {key}"))
            });
            objects += 1;
        }
        bar.inc(1);
    }
    while let Some(done) = puts.next().await {
        done?;
    }
    bar.finish_and_clear();
    let db = database::connect(&config.database).await?;
    // The restored bodies are the restored database's: the store says so too.
    mairust_actors::storage::identity::mark_restored(&db, &store)
        .await
        .context("writing the object store's identity marker")?;
    let audit = super::audit_log(config, &db);
    audit
        .record(
            Entry::success("backup.restore", super::cli_actor())
                .target(args.input.display())
                .detail("created_at", manifest.created_at.to_rfc3339())
                .detail("messages", manifest.counts.get("messages").copied())
                .detail("objects", objects),
        )
        .await;
    let status = database::schema_status(&db).await?;
    db.close().await.ok();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        println!(
            "restored {} (made {} by mairust {}): {objects} message bodies",
            args.input.display(),
            manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            manifest.mairust_version
        );
        print_summary(&manifest);
        if let database::SchemaStatus::Behind { pending } = status {
            println!(
                "  the schema is older than this mairust: run `mairust migrate` ({} pending)",
                pending.len()
            );
        }
        if !manifest.missing_objects.is_empty() {
            println!("  run `mairust db check` to see the rows whose bodies are missing");
        }
    }
    Ok(())
}
