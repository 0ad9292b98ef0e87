//! Writing a backup archive: the database snapshot, the configuration, the message
//! bodies the snapshot refers to, and the manifest that lists them all.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use futures::StreamExt;
use mairust_actors::audit::Entry;
use mairust_actors::config::{Config, StorageBackend};
use mairust_actors::storage::BodyStore;
use mairust_actors::storage::bodies::BodyError;

use super::archive::{append_bytes, append_file};
use super::{
    BackupArgs, CONFIG_FILE, FORMAT, IN_FLIGHT, MANIFEST, Manifest, OBJECTS, print_summary,
    private_file, progress, snapshot,
};
use crate::cli;

/// Writes the archive to `partial`, flushes it to disk and renames it to `--output`:
/// the database snapshot first (restore checks it before anything else), then the
/// configuration, the bodies the snapshot refers to, and the manifest last.
pub(super) async fn write(
    config: &Config,
    config_path: &Path,
    args: &BackupArgs,
    partial: &Path,
) -> anyhow::Result<()> {
    let db = cli::open_existing(config).await?;
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
    let (db_file, db_entry, inv) = snapshot::take(config, &db, work.path()).await?;
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
    let audit = cli::audit_log(config, &db);
    audit
        .record(
            Entry::success("backup.create", cli::cli_actor())
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
