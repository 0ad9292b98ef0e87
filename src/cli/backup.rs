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
//! [`restore`]).

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
use mairust_actors::storage::bodies::BodyError;
use mairust_actors::storage::envelope::hex;
use mairust_actors::storage::{BodyStore, identity};
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
                Err(BodyError::NotFound(_)) => missing.push(key.clone()),
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

/// The kinds of entry an archive may hold; anything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Database,
    Config,
    Manifest,
    Object,
}

/// What `name` is in an archive, or why it cannot be in one. Object keys are message
/// keys (`messages/…`) made of plain path segments: a restore writes them into the
/// store, and a `..` or an empty segment must never reach a filesystem path.
fn entry_kind(name: &str) -> anyhow::Result<EntryKind> {
    match name {
        SQLITE_FILE | PGDUMP_FILE => return Ok(EntryKind::Database),
        CONFIG_FILE => return Ok(EntryKind::Config),
        MANIFEST => return Ok(EntryKind::Manifest),
        _ => {}
    }
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    match name.strip_prefix(OBJECTS) {
        Some(key) if key.starts_with("messages/") && key.split('/').all(plain) => {
            Ok(EntryKind::Object)
        }
        _ => {
            bail!("the archive holds an entry named {name:?}, which `mairust backup` never writes")
        }
    }
}

/// Reads the whole archive, checks every entry against the manifest, and returns it.
/// Refused: an entry that is not a plain file, a name that appears twice (a restore
/// could install a copy other than the one checked), an entry the manifest does not
/// list or lists twice, a name `mairust backup` does not write, and a database copy
/// that is not the first entry (restore checks it before it writes any body).
pub fn verify(path: &Path) -> anyhow::Result<Manifest> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Vec<u8>> = None;
    let mut database: Option<String> = None;
    let damaged = |e: std::io::Error| {
        anyhow::anyhow!(
            "{} is not a readable backup archive (truncated or damaged): {e}",
            path.display()
        )
    };
    for (index, entry) in archive.entries().map_err(damaged)?.enumerate() {
        let mut entry = entry.map_err(damaged)?;
        let name = entry
            .path()
            .map_err(damaged)?
            .to_string_lossy()
            .into_owned();
        let kind = entry_kind(&name)?;
        let entry_type = entry.header().entry_type();
        if !entry_type.is_file() {
            bail!(
                "{name} in the archive is not a plain file ({entry_type:?}): refused, `mairust backup` writes only files"
            );
        }
        if seen.contains_key(&name) || (kind == EntryKind::Manifest && manifest.is_some()) {
            bail!(
                "{name} appears more than once in the archive: refused (a restore could install a copy other than the one checked)"
            );
        }
        match kind {
            EntryKind::Manifest => {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(damaged)?;
                manifest = Some(bytes);
                continue;
            }
            EntryKind::Database => {
                if let Some(other) = &database {
                    bail!("the archive holds two database copies, {other} and {name}: refused");
                }
                if index != 0 {
                    bail!(
                        "{name} is not the archive's first entry: refused (`mairust backup` writes the database first, and a restore checks it before it writes any body)"
                    );
                }
                database = Some(name.clone());
            }
            EntryKind::Config | EntryKind::Object => {}
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
    let expected_database = match manifest.database.as_str() {
        "sqlite" => SQLITE_FILE,
        "postgres" => PGDUMP_FILE,
        other => bail!("the manifest names an unknown database kind {other:?}"),
    };
    if database.as_deref() != Some(expected_database) {
        bail!(
            "the manifest describes a {} database, but the archive's database copy is {}",
            manifest.database,
            database.as_deref().unwrap_or("missing")
        );
    }
    let mut listed = std::collections::BTreeSet::new();
    for f in &manifest.files {
        if !listed.insert(f.path.as_str()) {
            bail!("the manifest lists {} twice: refused", f.path);
        }
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

/// Copies an entry into `out` and checks it against the manifest again: the archive
/// is read anew for the restore, and a file changed since `verify` read it must not be
/// installed.
fn copy_checked<R: Read, W: Write>(
    mut entry: R,
    out: &mut W,
    listed: &FileEntry,
) -> anyhow::Result<()> {
    struct Tee<'a, W>(&'a mut W, &'a mut Sha256);
    impl<W: Write> Write for Tee<'_, W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.0.write(buf)?;
            self.1.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut entry, &mut Tee(out, &mut hasher))
        .with_context(|| format!("reading {} from the archive", listed.path))?;
    let sha = hex(&hasher.finalize());
    if size != listed.size || sha != listed.sha256 {
        bail!(
            "{} changed since the archive was verified ({size} bytes with SHA-256 {sha}): nothing was restored",
            listed.path
        );
    }
    Ok(())
}

/// What already lives in the restore target, and the keys of the bodies already stored
/// (a failed restore removes only the bodies it added).
async fn target_contents(
    config: &Config,
    store: Option<&BodyStore>,
) -> anyhow::Result<(Vec<String>, std::collections::BTreeSet<String>)> {
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
    let stored: std::collections::BTreeSet<String> = match store {
        Some(store) => store
            .list("messages/")
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect(),
        None => Default::default(),
    };
    if !stored.is_empty() {
        found.push("the object store holds message bodies".into());
    }
    Ok((found, stored))
}

/// A `major.minor` version from `--version` output such as
/// `pg_restore (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` or `… 17devel`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut numbers = word.split('.').map(|part| {
        part.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    let major = numbers.next()??;
    let minor = numbers.next().flatten().unwrap_or(0);
    Some((major, minor))
}

/// `TOOL --version`, or an error that says how to get the tool.
async fn tool_version(tool: &str) -> anyhow::Result<(u32, u32)> {
    let out = match tokio::process::Command::new(tool)
        .arg("--version")
        .output()
        .await
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{tool} was not found on PATH: install the PostgreSQL client tools of the server's major version (Debian: postgresql-client); nothing was changed"
        ),
        Err(e) => bail!("cannot run {tool}: {e}; nothing was changed"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_version(&text) {
        Some(v) if out.status.success() => Ok(v),
        _ => bail!(
            "{tool} --version answered {:?}: not a PostgreSQL client tool; nothing was changed",
            text.trim()
        ),
    }
}

/// Everything about a PostgreSQL restore that can be known before the database is
/// touched: `pg_restore` and `psql` run, `pg_restore` is not newer than the server
/// (its SQL may use settings an older server rejects), `psql` is not older than
/// `pg_restore` (it must understand the script), the dump is readable (`pg_restore
/// --list`), was not taken from a newer server, holds MaiRust's tables and no large
/// objects (their restore commits on its own).
async fn pg_preflight(config: &Config, dump: &Path) -> anyhow::Result<()> {
    let restore = tool_version("pg_restore").await?;
    let psql = tool_version("psql").await?;
    let db = database::connect(&config.database).await.with_context(|| {
        format!(
            "cannot connect to the database ({})",
            super::redact(&config.database.url)
        )
    })?;
    let server_num: i64 = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT current_setting('server_version_num')::bigint AS n",
        ))
        .await?
        .context("server_version_num returned no row")?
        .try_get("", "n")?;
    db.close().await.ok();
    let server = (server_num / 10000) as u32;
    if restore.0 > server {
        bail!(
            "pg_restore {}.{} is newer than the PostgreSQL {server} server: its SQL may not run there; use the client tools of version {server}; nothing was changed",
            restore.0,
            restore.1
        );
    }
    if psql < restore {
        bail!(
            "psql {}.{} is older than pg_restore {}.{}: it may not understand the script pg_restore writes; install both from the same PostgreSQL client package; nothing was changed",
            psql.0,
            psql.1,
            restore.0,
            restore.1
        );
    }
    let out = tokio::process::Command::new("pg_restore")
        .arg("--list")
        .arg(dump)
        .output()
        .await
        .context("running pg_restore --list")?;
    if !out.status.success() {
        bail!(
            "pg_restore {}.{} cannot read the archive's database dump (made by a newer pg_dump, or damaged): {}; nothing was changed",
            restore.0,
            restore.1,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let list = String::from_utf8_lossy(&out.stdout);
    let header = |label: &str| {
        list.lines()
            .find_map(|l| l.trim_start_matches(';').trim().strip_prefix(label))
            .and_then(parse_version)
    };
    if let Some((from, _)) = header("Dumped from database version:")
        && from > server
    {
        bail!(
            "the dump comes from PostgreSQL {from}, newer than this PostgreSQL {server} server: restore it into PostgreSQL {from} or newer; nothing was changed"
        );
    }
    let mut tables = std::collections::BTreeSet::new();
    for line in list.lines().filter(|l| !l.starts_with(';')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.get(3..6) {
            Some(["TABLE", "public", name]) => {
                tables.insert(name.to_string());
            }
            Some([kind, ..]) if ["BLOB", "BLOBS", "LARGE"].contains(kind) => bail!(
                "the dump holds large objects, which MaiRust never writes: not a MaiRust backup? nothing was changed"
            ),
            _ => {}
        }
    }
    if let Some(missing) = TABLES
        .iter()
        .chain(&["seaql_migrations"])
        .find(|t| !tables.contains(**t))
    {
        bail!("the dump has no table {missing}: not a MaiRust database; nothing was changed");
    }
    Ok(())
}

/// Replaces the contents of schema `public` with the dump's in one transaction that
/// commits only after the whole script ran and the row counts match the manifest. The
/// previous tables are renamed aside inside that transaction and dropped at its end,
/// so until the commit every other session sees them unchanged, and any failure (the
/// dump unreadable half-way, an SQL error, a lost connection, this process killed)
/// leaves them as they were. `pg_restore` writes the script and `psql` runs it:
/// `pg_restore --single-transaction` cannot include the rename and the checks.
async fn pg_replace(config: &Config, dump: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    use std::process::Stdio;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let aside = format!("mairust_before_restore_{}", std::process::id());
    // Waiting for another session's locks (a server still running elsewhere) ends in
    // an error rather than a hang; the script itself resets lock_timeout, so it is set
    // again before the final drop.
    let prelude = format!(
        "SET lock_timeout = '30s';\nBEGIN;\nDO $$ BEGIN\n  IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'public') THEN\n    ALTER SCHEMA public RENAME TO {aside};\n  END IF;\nEND $$;\nCREATE SCHEMA public;\n"
    );
    let mut checks = String::from("DO $$\nDECLARE n bigint;\nBEGIN\n");
    let expected = TABLES
        .iter()
        .filter_map(|t| manifest.counts.get(*t).map(|n| (*t, *n)))
        .chain([("seaql_migrations", manifest.migrations.len() as u64)]);
    for (table, rows) in expected {
        checks.push_str(&format!(
            "  SELECT count(*) INTO n FROM public.{table};\n  IF n <> {rows} THEN RAISE EXCEPTION 'restored table {table} holds % rows where the manifest says {rows}', n; END IF;\n"
        ));
    }
    checks.push_str("END $$;\n");
    let postlude = format!(
        "{checks}SET lock_timeout = '30s';\nDROP SCHEMA IF EXISTS {aside} CASCADE;\nCOMMIT;\n"
    );

    let mut script = tokio::process::Command::new("pg_restore")
        .args(["--no-owner", "--no-privileges", "--file", "-"])
        .arg(dump)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running pg_restore")?;
    let mut psql = pg_command("psql", &config.database.url)
        .args(["--no-psqlrc", "--quiet", "--no-password"])
        .args(["--set", "ON_ERROR_STOP=1"])
        .env(
            "PGCONNECT_TIMEOUT",
            config.database.connect_timeout_seconds.max(2).to_string(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running psql")?;
    let collect = |pipe: Option<tokio::process::ChildStderr>| {
        tokio::spawn(async move {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text).await;
            }
            text
        })
    };
    let script_err = collect(script.stderr.take());
    let psql_err = collect(psql.stderr.take());
    let mut to_psql = psql.stdin.take().context("psql has no input")?;
    let mut from_script = script.stdout.take().context("pg_restore has no output")?;
    let fed = async {
        to_psql.write_all(prelude.as_bytes()).await?;
        tokio::io::copy(&mut from_script, &mut to_psql).await?;
        Ok::<(), std::io::Error>(())
    }
    .await;
    // Should psql have stopped early, pg_restore now gets a broken pipe.
    drop(from_script);
    let script_status = script.wait().await.context("waiting for pg_restore")?;
    if fed.is_ok() && script_status.success() {
        // The one place the transaction may commit: the whole script went through.
        let _ = to_psql.write_all(postlude.as_bytes()).await;
    } else {
        // The connection closes without a COMMIT: PostgreSQL rolls everything back.
        let _ = psql.start_kill();
    }
    drop(to_psql);
    let psql_status = psql.wait().await.context("waiting for psql")?;
    let script_err = script_err.await.unwrap_or_default();
    let psql_err = psql_err.await.unwrap_or_default();
    if !script_status.success() {
        bail!(
            "pg_restore failed while reading the dump: {}; the transaction was rolled back and the database is as it was",
            script_err.trim()
        );
    }
    if !psql_status.success() {
        let hint = if psql_err.contains("lock timeout") {
            " (is a server still using this database?)"
        } else {
            ""
        };
        bail!(
            "restoring the dump failed{hint}: {}; the transaction was rolled back and the database is as it was",
            psql_err.trim()
        );
    }
    Ok(())
}

/// A SQLite copy waiting beside the database it will replace; removed unless installed.
struct StagedSqlite {
    staged: PathBuf,
    target: PathBuf,
}

impl StagedSqlite {
    /// Checks the copy before anything else is written: SQLite's integrity check, and
    /// the row counts and migrations of the manifest.
    async fn check(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let url = format!("sqlite://{}?mode=ro", self.staged.display());
        let result = async {
            let db = sea_orm::Database::connect(&url)
                .await
                .context("cannot open the archived SQLite database")?;
            let verdict = async {
                let rows = super::column(&db, "PRAGMA integrity_check").await?;
                if rows != ["ok"] {
                    bail!(
                        "the archived SQLite database fails its integrity check: {}",
                        rows.join("; ")
                    );
                }
                let inv = inventory(&db).await?;
                for (table, rows) in &inv.counts {
                    if let Some(expected) = manifest.counts.get(table)
                        && expected != rows
                    {
                        bail!(
                            "the archived SQLite database has {rows} rows in {table} where the manifest says {expected}"
                        );
                    }
                }
                if inv.migrations != manifest.migrations {
                    bail!("the archived SQLite database's migrations differ from the manifest's");
                }
                Ok(())
            }
            .await;
            db.close().await.ok();
            verdict
        }
        .await;
        // Opening it may have left a -shm beside it.
        remove_sidecars(&self.staged);
        result.map_err(|e| e.context("nothing was changed"))
    }

    /// Swaps the copy in. The old database is checkpointed first, so removing its -wal
    /// (which must not be applied to the new file) loses nothing even if the process
    /// stops between that and the rename.
    async fn install(&self) -> anyhow::Result<()> {
        if self.target.exists() {
            let url = format!("sqlite://{}", self.target.display());
            match sea_orm::Database::connect(&url).await {
                Ok(db) => {
                    // Anything but a completed checkpoint (busy, or an error) leaves
                    // transactions in the -wal file that removing it would lose.
                    let busy = db
                        .query_one_raw(Statement::from_string(
                            db.get_database_backend(),
                            "PRAGMA wal_checkpoint(TRUNCATE)",
                        ))
                        .await
                        .ok()
                        .flatten()
                        .and_then(|row| row.try_get_by_index::<i64>(0).ok());
                    db.close().await.ok();
                    if busy == Some(1) {
                        bail!(
                            "the database {} is in use by another process: stop it; nothing was changed",
                            self.target.display()
                        );
                    }
                    // A failed checkpoint loses nothing when there is no -wal content
                    // (a corrupt database, often the reason for the restore).
                    let wal = format!("{}-wal", self.target.display());
                    let wal_holds_data = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
                    if busy != Some(0) && wal_holds_data {
                        bail!(
                            "the database {} could not be checkpointed and {wal} holds transactions that replacing it would lose: nothing was changed",
                            self.target.display()
                        );
                    }
                }
                // A database that does not open is being replaced for a reason.
                Err(e) => eprintln!(
                    "warning: the database {} being replaced does not open ({e}); replacing it anyway",
                    self.target.display()
                ),
            }
        }
        remove_sidecars(&self.target);
        std::fs::rename(&self.staged, &self.target).with_context(|| {
            format!(
                "cannot move the restored database to {}",
                self.target.display()
            )
        })?;
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("flushing {}", dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for StagedSqlite {
    fn drop(&mut self) {
        // Gone once installed.
        let _ = std::fs::remove_file(&self.staged);
        remove_sidecars(&self.staged);
    }
}

fn remove_sidecars(db: &Path) {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// The archive's database copy, written to a private file and checked; nothing of the
/// target is touched yet.
enum Staged {
    Sqlite(StagedSqlite),
    Postgres(PathBuf),
}

async fn stage_database<R: Read>(
    config: &Config,
    manifest: &Manifest,
    entry: tar::Entry<'_, R>,
    work: &Path,
) -> anyhow::Result<Staged> {
    let name = entry.path()?.to_string_lossy().into_owned();
    let listed = manifest
        .files
        .iter()
        .find(|f| f.path == name)
        .with_context(|| format!("{name} is not in the manifest"))?;
    if name == SQLITE_FILE {
        let target = database::sqlite_path(&config.database.url)
            .context("database.url names no SQLite file")?;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            mairust_actors::storage::bodies::create_private_dir(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let staged = StagedSqlite {
            staged: PathBuf::from(format!("{}.restoring", target.display())),
            target,
        };
        let mut out = private_file(&staged.staged)?;
        copy_checked(entry, &mut out, listed)?;
        out.sync_all()?;
        drop(out);
        staged.check(manifest).await?;
        return Ok(Staged::Sqlite(staged));
    }
    let dump = work.join("mairust.pgdump");
    let mut out = private_file(&dump)?;
    copy_checked(entry, &mut out, listed)?;
    out.sync_all()?;
    pg_preflight(config, &dump).await?;
    Ok(Staged::Postgres(dump))
}

/// Refuses while a server runs with this configuration: a process holds its pid file's
/// lock, the pid file names a live process (a server of a version without the lock),
/// or its HTTP address answers.
async fn refuse_if_running(config: &Config) -> anyhow::Result<()> {
    if let Some(pid_file) = &config.server.pid_file
        && let Some(seen) = super::pidfile::observe(pid_file)?
    {
        if let Some(holder) = seen.holder {
            bail!(
                "a server is running on this configuration (process {holder} holds {}): stop it before restoring",
                pid_file.display()
            );
        }
        if let Some(pid) = seen.pid {
            // SAFETY: signal 0 only checks that the process exists; EPERM means it
            // exists and belongs to another user.
            let alive = unsafe { libc::kill(pid, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            if alive {
                bail!(
                    "{} names process {pid}, which is running: stop the server before restoring (if that process is not a MaiRust server, the pid file is stale: remove it)",
                    pid_file.display()
                );
            }
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

/// Bodies written per `put_batch` (a batch is durable when it returns).
const BATCH_BYTES: usize = 16 << 20;

/// Stores one batch of bodies; the keys that were not in the store before are noted
/// first, so a failure part-way still knows what to take back.
async fn put_bodies(
    store: &BodyStore,
    batch: &mut Vec<(String, Bytes)>,
    existing: &std::collections::BTreeSet<String>,
    added: &mut Vec<String>,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    // Bodies never change: one already in the store is this one, and is not written
    // again (a failed batch's cleanup must never touch what the live database uses).
    batch.retain(|(k, _)| !existing.contains(k));
    added.extend(batch.iter().map(|(k, _)| k.clone()));
    store
        .put_batch(std::mem::take(batch))
        .await
        .context("storing message bodies")
}

/// Takes back the bodies a failed restore added; what it cannot delete it names.
async fn remove_added(store: &BodyStore, added: &[String]) -> Option<String> {
    let results = futures::stream::iter(added)
        .map(|key| async move {
            match store.delete(key).await {
                Ok(()) => None,
                // A put that failed may have left nothing to delete.
                Err(_) if matches!(store.exists(key).await, Ok(false)) => None,
                Err(e) => Some(format!("{key}: {e}")),
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let failed: Vec<String> = results.into_iter().flatten().collect();
    (!failed.is_empty()).then(|| {
        format!(
            "{} bodies this restore added could not be removed and stay as orphans (`mairust db check --fix` moves them to lost+found/): {}",
            failed.len(),
            failed.join(", ")
        )
    })
}

/// The order keeps the target whole whatever fails: the archive is verified; the
/// database copy is staged and checked (SQLite: integrity and row counts; PostgreSQL:
/// client tools, server version, `pg_restore --list`); the bodies the store lacks are
/// stored (a key already stored is the same message, bodies being immutable, and is
/// left alone: the live database may need it); then the database is swapped in
/// at once (SQLite: a rename; PostgreSQL: one transaction). When the swap fails the
/// bodies this restore added are removed again, and the previous database was never
/// changed. Only after the swap does the store's identity marker name the restored
/// database (`storage::identity`).
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
    // An `fs` root that does not exist yet holds nothing; it is made once the database
    // copy passed its checks (a restore brings the mail the store will hold).
    let store = match BodyStore::open(&config.storage) {
        Ok(store) => Some(store),
        Err(BodyError::RootMissing(_)) => None,
        Err(e) => return Err(e).context("opening the object store"),
    };
    let (present, existing) = target_contents(config, store.as_ref()).await?;
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
    let listed: BTreeMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let work = tempfile::tempdir().context("temporary directory")?;
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot open {}", args.input.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut entries = archive.entries()?;
    let bar = progress(manifest.files.len() as u64, "restoring");
    // 1. The database copy: the first entry (verify checked).
    let first = entries
        .next()
        .context("the archive is empty")?
        .context("reading the archive")?;
    let staged = stage_database(config, &manifest, first, work.path()).await?;
    let store = match store {
        Some(store) => store,
        None => BodyStore::create(&config.storage).context("creating the object store")?,
    };
    bar.inc(1);
    // 2. The bodies, and the configuration kept for the end.
    let mut config_text = None;
    let mut added = Vec::new();
    let copied = async {
        let mut objects = 0u64;
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        for entry in entries {
            let entry = entry?;
            let name = entry.path()?.to_string_lossy().into_owned();
            if name == MANIFEST {
                continue;
            }
            let entry_listed = listed
                .get(name.as_str())
                .with_context(|| format!("{name} is not in the manifest"))?;
            let mut bytes = Vec::with_capacity(entry_listed.size as usize);
            copy_checked(entry, &mut bytes, entry_listed)?;
            if name == CONFIG_FILE {
                config_text = Some(bytes);
            } else if let Some(key) = name.strip_prefix(OBJECTS) {
                batch_bytes += bytes.len();
                batch.push((key.to_string(), Bytes::from(bytes)));
                objects += 1;
                if batch.len() >= IN_FLIGHT || batch_bytes >= BATCH_BYTES {
                    put_bodies(&store, &mut batch, &existing, &mut added).await?;
                    batch_bytes = 0;
                }
            }
            bar.inc(1);
        }
        put_bodies(&store, &mut batch, &existing, &mut added).await?;
        Ok::<u64, anyhow::Error>(objects)
    }
    .await;
    bar.finish_and_clear();
    // 3. The database, at once.
    let installed = match copied {
        Ok(objects) => match &staged {
            Staged::Sqlite(staged) => staged.install().await,
            Staged::Postgres(dump) => pg_replace(config, dump, &manifest).await,
        }
        .map(|()| objects),
        Err(e) => Err(e.context("the database was not changed")),
    };
    let objects = match installed {
        Ok(objects) => objects,
        Err(e) => {
            return Err(match remove_added(&store, &added).await {
                Some(left) => e.context(left),
                None => e,
            });
        }
    };
    drop(staged);
    // 4. The store takes the restored database's identity (its marker), only now: a
    // restore that failed left the marker the previous database expects. Should this
    // step fail, the server refuses to start on the mismatch, and the restore can be run
    // again.
    let db = database::connect(&config.database).await?;
    identity::mark_restored(&db, &store)
        .await
        .context("the data was restored, but the object store's identity marker could not be written (run the restore again)")?;
    // 5. The configuration, when asked for: whole or not at all.
    if let (Some(path), Some(text)) = (&args.config_to, &config_text) {
        let partial = PathBuf::from(format!("{}.partial", path.display()));
        let written = private_file(&partial).and_then(|mut out| {
            out.write_all(text)?;
            out.sync_all()?;
            std::fs::rename(&partial, path)?;
            Ok(())
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!(
                "the data was restored, but the configuration could not be written to {}",
                path.display()
            )));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_outside_the_layout_are_refused() {
        for ok in [
            SQLITE_FILE,
            PGDUMP_FILE,
            CONFIG_FILE,
            MANIFEST,
            "objects/messages/2026-11-29/18/0193.eml",
        ] {
            assert!(entry_kind(ok).is_ok(), "{ok}");
        }
        for bad in [
            "objects/messages/../../etc/passwd",
            "objects/messages//x.eml",
            "objects/messages/./x.eml",
            "objects/lost+found/x.eml",
            "objects/other/x.eml",
            "/manifest.json",
            "database/other.sqlite",
        ] {
            assert!(entry_kind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_versions_parse() {
        assert_eq!(
            parse_version("pg_restore (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some((15, 20))
        );
        assert_eq!(parse_version("psql (PostgreSQL) 17devel"), Some((17, 0)));
        assert_eq!(parse_version(" 16.4 (Ubuntu 16.4-1)"), Some((16, 4)));
        assert_eq!(parse_version("no version here"), None);
    }
}
