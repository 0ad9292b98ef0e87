//! The database copy: one consistent snapshot for a backup (SQLite's `VACUUM INTO`, or
//! PostgreSQL's `pg_dump` in [`super::postgres`]), and for a restore the SQLite copy
//! staged beside the database it replaces, checked, and swapped in at once.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mairust_actors::config::Config;
use mairust_actors::database;
use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::archive::copy_checked;
use super::{
    FileEntry, Inventory, Manifest, PGDUMP_FILE, SQLITE_FILE, inventory, postgres, private_file,
};
use crate::cli;

/// Copies the database into `dir` as one snapshot and lists what it holds: the file,
/// its name in the archive, and the inventory of that same snapshot.
pub(super) async fn take(
    config: &Config,
    db: &DatabaseConnection,
    dir: &Path,
) -> anyhow::Result<(PathBuf, &'static str, Inventory)> {
    if !config.database.is_sqlite() {
        let (dump, inv) = postgres::dump(config, db, dir).await?;
        return Ok((dump, PGDUMP_FILE, inv));
    }
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
    Ok((copy, SQLITE_FILE, inv))
}

/// A SQLite copy waiting beside the database it will replace; removed unless installed.
pub(super) struct StagedSqlite {
    staged: PathBuf,
    target: PathBuf,
}

impl StagedSqlite {
    /// Writes the archive's copy beside the database `database.url` names, checks it
    /// against the manifest's entry while copying, then checks the database itself.
    pub(super) async fn stage<R: Read>(
        config: &Config,
        manifest: &Manifest,
        entry: R,
        listed: &FileEntry,
    ) -> anyhow::Result<StagedSqlite> {
        let target = database::sqlite_path(&config.database.url)
            .context("database.url names no SQLite file")?;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            mairust_actors::private_dir::create_private_dir(dir)
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
        Ok(staged)
    }

    /// Checks the copy before anything else is written: SQLite's integrity check, and
    /// the row counts and migrations of the manifest.
    async fn check(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let url = format!("sqlite://{}?mode=ro", self.staged.display());
        let result = async {
            let db = sea_orm::Database::connect(&url)
                .await
                .context("cannot open the archived SQLite database")?;
            let verdict = async {
                let rows = cli::column(&db, "PRAGMA integrity_check").await?;
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
    pub(super) async fn install(&self) -> anyhow::Result<()> {
        if self.target.exists() {
            let url = format!("sqlite://{}", self.target.display());
            match sea_orm::Database::connect(&url).await {
                Ok(db) => {
                    // Anything but a completed checkpoint (busy, or an error) leaves
                    // transactions in the -wal file that removing it would lose.
                    let busy = cli::scalar::<i64, _>(&db, "PRAGMA wal_checkpoint(TRUNCATE)")
                        .await
                        .ok();
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

/// Removes SQLite's -wal and -shm files beside `db`.
fn remove_sidecars(db: &Path) {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
