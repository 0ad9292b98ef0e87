//! Where the `fs` backend keeps what is not a body yet: the temporary directory, how
//! directories are made, and when a leftover counts as stale. Shared by the writes
//! (`files`) and the files made ahead (`spares`).

use std::time::Duration;

use super::MARKER_KEY;

/// `fs`: where bodies are written before their rename into place, so that what a
/// crash or a failed write leaves is in one directory, swept by
/// [`remove_stale_temporaries`], never among the bodies.
pub const TMP_DIR: &str = ".tmp";

/// Temporary files older than this were left by a crash, a kill or a failed write: no
/// write takes that long, and no spare is used that old ([`SPARE_MAX_AGE`]).
pub const STALE_TEMPORARY: Duration = Duration::from_secs(600);

/// Whether the root is there (with `marked`: holds the identity marker).
pub(super) fn present(root: &std::path::Path, marked: bool) -> bool {
    if marked {
        root.join(MARKER_KEY).is_file()
    } else {
        root.is_dir()
    }
}

/// Creates `dir` and what is missing above it under `root`; returns the directories
/// that got new entries that way (to be flushed with the batch).
pub(super) fn make_dirs(
    root: &std::path::Path,
    dir: &std::path::Path,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut created = Vec::new();
    if dir.is_dir() {
        return Ok(created);
    }
    let mut missing = Some(dir);
    while let Some(d) = missing {
        if d.exists() || d == root {
            break;
        }
        if let Some(up) = d.parent() {
            created.push(up.to_path_buf());
        }
        missing = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    Ok(created)
}

pub(super) fn temporary_name(tmp_dir: &std::path::Path) -> std::path::PathBuf {
    tmp_dir.join(format!("{}.eml.tmp", uuid::Uuid::new_v4().simple()))
}
