//! `mairust restore`: the archive verified, the target checked, the database copy
//! staged, the bodies stored, then the database swapped in at once (see [`restore`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use indicatif::ProgressBar;
use mairust_actors::audit::Entry;
use mairust_actors::config::Config;
use mairust_actors::database;
use mairust_actors::storage::bodies::BodyError;
use mairust_actors::storage::{BodyStore, identity};

use super::archive::{copy_checked, verify};
use super::snapshot::StagedSqlite;
use super::{
    CONFIG_FILE, FileEntry, IN_FLIGHT, MANIFEST, Manifest, OBJECTS, RestoreArgs, SQLITE_FILE,
    postgres, print_summary, private_file, progress,
};
use crate::cli;

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
    let (store, existing) = check_target(config, &args, &manifest).await?;
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
    let mut added = Vec::new();
    let copied = store_bodies(entries, &listed, &store, &existing, &bar, &mut added).await;
    bar.finish_and_clear();
    // 3. The database, at once.
    let installed = match copied {
        Ok(copied) => match &staged {
            Staged::Sqlite(staged) => staged.install().await,
            Staged::Postgres(dump) => postgres::replace(config, dump, &manifest).await,
        }
        .map(|()| copied),
        Err(e) => Err(e.context("the database was not changed")),
    };
    let (objects, config_text) = match installed {
        Ok(copied) => copied,
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
        write_config(path, text)?;
    }
    let audit = cli::audit_log(config, &db);
    audit
        .record(
            Entry::success("backup.restore", cli::cli_actor())
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

/// Everything that refuses a restore before the archive is read again: a database of
/// the other kind, a server running on the target, a target that holds data or a
/// `--config-to` file that exists (without `--force`), a configuration asked for that
/// the backup lacks. Returns the object store (none while its `fs` root does not
/// exist) and the keys it already holds.
async fn check_target(
    config: &Config,
    args: &RestoreArgs,
    manifest: &Manifest,
) -> anyhow::Result<(Option<BodyStore>, BTreeSet<String>)> {
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
    Ok((store, existing))
}

/// What already lives in the restore target, and the keys of the bodies already stored
/// (a failed restore removes only the bodies it added).
async fn target_contents(
    config: &Config,
    store: Option<&BodyStore>,
) -> anyhow::Result<(Vec<String>, BTreeSet<String>)> {
    let mut found = Vec::new();
    if let Some(path) = database::sqlite_path(&config.database.url) {
        if path.exists() && std::fs::metadata(&path)?.len() > 0 {
            found.push(format!("the SQLite database {} exists", path.display()));
        }
    } else {
        let db = cli::connect(config).await?;
        let tables: i64 = cli::scalar(
            &db,
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .await?;
        db.close().await.ok();
        if tables > 0 {
            found.push(format!("the PostgreSQL database has {tables} tables"));
        }
    }
    let stored: BTreeSet<String> = match store {
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

/// Refuses while a server runs with this configuration: a process holds its pid file's
/// lock, the pid file names a live process (a server of a version without the lock),
/// or its HTTP address answers.
async fn refuse_if_running(config: &Config) -> anyhow::Result<()> {
    if let Some(pid_file) = &config.server.pid_file
        && let Some(seen) = cli::pidfile::observe(pid_file)?
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
    if cli::diag::server_answers(config).await {
        bail!(
            "a server answers at http.address {}: stop it before restoring",
            config.http.address
        );
    }
    Ok(())
}

/// The archive's database copy, written to a private file and checked; nothing of the
/// target is touched yet.
enum Staged {
    Sqlite(StagedSqlite),
    Postgres(PathBuf),
}

/// Stages the archive's first entry, the database copy, for [`Staged`].
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
        let staged = StagedSqlite::stage(config, manifest, entry, listed).await?;
        return Ok(Staged::Sqlite(staged));
    }
    let dump = work.join("mairust.pgdump");
    let mut out = private_file(&dump)?;
    copy_checked(entry, &mut out, listed)?;
    out.sync_all()?;
    postgres::preflight(config, &dump).await?;
    Ok(Staged::Postgres(dump))
}

/// Stores the bodies of the archive's remaining entries in batches, each checked
/// against the manifest as it is read; returns how many there were and the archived
/// configuration, kept for the end. `added` names every body written, so that a
/// failure (here or later) can take them back.
async fn store_bodies<R: Read>(
    entries: tar::Entries<'_, R>,
    listed: &BTreeMap<&str, &FileEntry>,
    store: &BodyStore,
    existing: &BTreeSet<String>,
    bar: &ProgressBar,
    added: &mut Vec<String>,
) -> anyhow::Result<(u64, Option<Vec<u8>>)> {
    let mut config_text = None;
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
                put_bodies(store, &mut batch, existing, added).await?;
                batch_bytes = 0;
            }
        }
        bar.inc(1);
    }
    put_bodies(store, &mut batch, existing, added).await?;
    Ok((objects, config_text))
}

/// Bodies written per `put_batch` (a batch is durable when it returns).
const BATCH_BYTES: usize = 16 << 20;

/// Stores one batch of bodies; the keys that were not in the store before are noted
/// first, so a failure part-way still knows what to take back.
async fn put_bodies(
    store: &BodyStore,
    batch: &mut Vec<(String, Bytes)>,
    existing: &BTreeSet<String>,
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

/// Writes the archived configuration to `path` under a temporary name and renames it:
/// whole or not at all.
fn write_config(path: &Path, text: &[u8]) -> anyhow::Result<()> {
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
    Ok(())
}
