//! The `fs` backend's own writes: bodies through a temporary file (made ahead: [`Spares`])
//! and a rename, flushed in batches (fsync of the files, then once per directory), and
//! the sweep of the temporaries a crash or a failed write leaves behind.

use std::time::Duration;

use bytes::Bytes;

use super::{BodyError, MARKER_KEY};
use crate::private_dir::create_private_dir;

/// Runs a filesystem job on the blocking pool.
pub(super) async fn blocking(
    f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), BodyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BodyError::Sync(std::io::Error::other(e)))?
        .map_err(BodyError::Sync)
}

/// Threads flushing one batch's files at once.
const MAX_FLUSH_THREADS: usize = 16;

/// `fs`: where bodies are written before their rename into place, so that what a
/// crash or a failed write leaves is in one directory, swept by
/// [`remove_stale_temporaries`], never among the bodies.
pub const TMP_DIR: &str = ".tmp";

/// Writes each object as `root/key` through a temporary file and a rename, so a reader
/// never sees half an object. With `fsync`, each file's data is flushed before its
/// rename (in parallel threads for a batch, so the filesystem merges their journal
/// commits), then each directory that got new entries is flushed once. The root must
/// exist, and with `marked` hold the identity marker (one `stat` a batch): a missing
/// root or marker is an unmounted volume, not a place to write bodies into.
pub(super) fn write_files(
    root: &std::path::Path,
    objects: &[(String, Bytes)],
    fsync: bool,
    marked: bool,
    spares: &Spares,
) -> std::io::Result<()> {
    let present = if marked {
        root.join(MARKER_KEY).is_file()
    } else {
        root.is_dir()
    };
    if !present {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "the object store directory {} is gone or lost its identity marker (volume unmounted?)",
                root.display()
            ),
        ));
    }
    let tmp_dir = root.join(TMP_DIR);
    if !tmp_dir.is_dir() {
        create_private_dir(&tmp_dir)?;
    }
    let created: Vec<Vec<std::path::PathBuf>> = if fsync && objects.len() > 1 {
        let per_thread = objects.len().div_ceil(MAX_FLUSH_THREADS);
        let tmp_dir = &tmp_dir;
        std::thread::scope(|scope| {
            let workers: Vec<_> = objects
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|object| write_file(root, tmp_dir, object, true, spares))
                            .collect::<std::io::Result<Vec<_>>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("writer thread panicked")))
                })
                .collect::<std::io::Result<Vec<Vec<_>>>>()
                .map(|v| v.into_iter().flatten().collect())
        })?
    } else {
        objects
            .iter()
            .map(|object| write_file(root, &tmp_dir, object, fsync, spares))
            .collect::<std::io::Result<_>>()?
    };
    if fsync {
        let mut dirs: Vec<std::path::PathBuf> = objects
            .iter()
            .filter_map(|(key, _)| root.join(key).parent().map(std::path::Path::to_path_buf))
            .chain(created.into_iter().flatten())
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            std::fs::File::open(&dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Writes one object; returns the directories whose entries changed because this call
/// created directories (their parents need a flush too). A failed write removes its
/// temporary file (on a full disk it would keep the space).
fn write_file(
    root: &std::path::Path,
    tmp_dir: &std::path::Path,
    (key, body): &(String, Bytes),
    fsync: bool,
    spares: &Spares,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    let path = root.join(key);
    match spares.take() {
        Some(spare) => match write_into(root, &path, body, fsync, &spare.path, Some(spare.file)) {
            // The spare went away under it (its directory removed by hand; on NFS, swept
            // by another node: ESTALE): a new file.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ESTALE) =>
            {
                // The others were made in the same place.
                spares.forget();
                write_into(root, &path, body, fsync, &temporary_name(tmp_dir), None)
            }
            written => written,
        },
        None => write_into(root, &path, body, fsync, &temporary_name(tmp_dir), None),
    }
}

/// Writes `body` through the temporary `tmp` (`spare`: already created and open) into
/// `path`; see [`write_file`].
fn write_into(
    root: &std::path::Path,
    path: &std::path::Path,
    body: &[u8],
    fsync: bool,
    tmp: &std::path::Path,
    spare: Option<std::fs::File>,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    use std::io::Write;
    let result = (|| {
        let mut file = match spare {
            Some(file) => file,
            None => std::fs::File::create(tmp)?,
        };
        file.write_all(body)?;
        if fsync {
            file.sync_data()?;
        }
        drop(file);
        let mut created = Vec::new();
        let parent = path.parent().unwrap_or(root);
        if !parent.is_dir() {
            let mut dir = Some(parent);
            while let Some(d) = dir {
                if d.exists() || d == root {
                    break;
                }
                if let Some(up) = d.parent() {
                    created.push(up.to_path_buf());
                }
                dir = d.parent();
            }
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(tmp, path)?;
        Ok(created)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

fn temporary_name(tmp_dir: &std::path::Path) -> std::path::PathBuf {
    tmp_dir.join(format!("{}.eml.tmp", uuid::Uuid::new_v4().simple()))
}

/// Empty temporary files made ahead of the bodies that will fill them (fs). Creating a
/// file is the slowest metadata step of a write on some file systems (ext4 without a
/// journal checks every inode of the group deleted in the last minutes: about 1 ms a
/// file after a large deletion), so it is done after a batch is answered
/// ([`Spares::refill`]), not while its callers wait. A body written into a spare goes
/// through the same write, flush and rename as into a new file. Spares are kept open
/// (a volume holding the store cannot be unmounted while the server runs anyway) and
/// removed when the store is dropped; a kill leaves them to the sweep.
#[derive(Default)]
pub(super) struct Spares {
    /// Oldest first.
    files: std::sync::Mutex<std::collections::VecDeque<Spare>>,
    refilling: std::sync::atomic::AtomicBool,
}

struct Spare {
    path: std::path::PathBuf,
    file: std::fs::File,
    made: std::time::Instant,
}

/// Spares kept: a batch at low concurrency finds them all made; a larger batch makes
/// the rest as it goes.
pub const SPARE_FILES: usize = 32;

/// A spare is used only while younger than this, well before the sweep of stale
/// temporaries ([`STALE_TEMPORARY`]) could remove it under a writer; older ones are
/// removed by the next refill.
const SPARE_MAX_AGE: Duration = Duration::from_secs(STALE_TEMPORARY.as_secs() / 2);

impl Spares {
    /// The newest spare, if it is young enough (never any file work here: this is on
    /// the path a caller waits on).
    fn take(&self) -> Option<Spare> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files
            .back()
            .is_some_and(|spare| spare.made.elapsed() < SPARE_MAX_AGE)
            .then(|| files.pop_back())
            .flatten()
    }

    /// Whether a refill is due: half the spares are taken, or the newest is too old to
    /// be used (then so are the others). A batch that leaves enough spares costs no
    /// refill task.
    pub(super) fn low(&self) -> bool {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.len() <= SPARE_FILES / 2
            || files
                .back()
                .is_some_and(|spare| spare.made.elapsed() >= SPARE_MAX_AGE)
    }

    /// Drops every spare (their files went away): the next refill makes new ones.
    fn forget(&self) {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Removes the expired spares and makes new ones up to [`SPARE_FILES`] in `root`'s
    /// temporary directory (blocking; one refill at a time, a second call meanwhile
    /// returns at once). With `marked`, only while the root holds the identity marker:
    /// a root without it is a bare mount point, where nothing is written.
    pub(super) fn refill(&self, root: &std::path::Path, marked: bool) {
        use std::sync::atomic::Ordering;
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let expired: Vec<Spare> = {
            let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            let keep = files
                .iter()
                .position(|spare| spare.made.elapsed() < SPARE_MAX_AGE)
                .unwrap_or(files.len());
            files.drain(..keep).collect()
        };
        for spare in expired {
            let _ = std::fs::remove_file(&spare.path);
        }
        let tmp_dir = root.join(TMP_DIR);
        loop {
            let missing = {
                let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
                SPARE_FILES.saturating_sub(files.len())
            };
            let mounted = !marked || root.join(MARKER_KEY).is_file();
            if missing == 0 || !mounted || !tmp_dir.is_dir() {
                break;
            }
            let path = temporary_name(&tmp_dir);
            match std::fs::File::create(&path) {
                Ok(file) => self
                    .files
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(Spare {
                        path,
                        file,
                        made: std::time::Instant::now(),
                    }),
                // A full or failing disk: the next write reports it.
                Err(_) => break,
            }
        }
        self.refilling.store(false, Ordering::Release);
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        let files = self.files.get_mut().unwrap_or_else(|e| e.into_inner());
        for spare in files.drain(..) {
            let _ = std::fs::remove_file(&spare.path);
        }
    }
}

/// Temporary files older than this were left by a crash, a kill or a failed write: no
/// write takes that long, and no spare is used that old ([`SPARE_MAX_AGE`]).
pub const STALE_TEMPORARY: Duration = Duration::from_secs(600);

/// `fs`: removes temporary body files older than `older_than` (left by a kill or a
/// failed write), and returns how many. The first sweep of a store written by an older
/// version, which put them beside the bodies, walks `messages/` once for those.
pub fn remove_stale_temporaries(
    root: &std::path::Path,
    older_than: Duration,
) -> std::io::Result<usize> {
    let tmp_dir = root.join(TMP_DIR);
    let mut removed = 0;
    if tmp_dir.is_dir() {
        removed += remove_old_temporaries(&tmp_dir, older_than, false)?;
    } else {
        let legacy = root.join("messages");
        if legacy.is_dir() {
            removed += remove_old_temporaries(&legacy, older_than, true)?;
        }
        create_private_dir(&tmp_dir)?;
    }
    Ok(removed)
}

fn is_temporary_name(entry: &std::fs::DirEntry) -> bool {
    entry
        .file_name()
        .to_str()
        .is_some_and(|name| name.ends_with(".eml.tmp"))
}

fn remove_old_temporaries(
    dir: &std::path::Path,
    older_than: Duration,
    recursive: bool,
) -> std::io::Result<usize> {
    let mut removed = 0;
    // Gone since it was listed (renamed by a writer, swept by another node): skipped.
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if file_type.is_dir() && recursive {
            removed += remove_old_temporaries(&entry.path(), older_than, true)?;
            continue;
        }
        // Only temporaries are looked at further: the legacy walk passes every body.
        if !(file_type.is_file() && is_temporary_name(&entry)) {
            continue;
        }
        // Renamed into place or removed since the listing: not ours to sweep.
        let modified = match entry.metadata().and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if modified.elapsed().unwrap_or(Duration::ZERO) >= older_than {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporaries(root: &std::path::Path) -> usize {
        std::fs::read_dir(root.join(TMP_DIR)).unwrap().count()
    }

    fn write(root: &std::path::Path, key: &str, body: &'static [u8], spares: &Spares) {
        let objects = [(key.to_string(), Bytes::from_static(body))];
        write_files(root, &objects, true, false, spares).unwrap();
        assert_eq!(std::fs::read(root.join(key)).unwrap(), body);
    }

    #[test]
    fn bodies_go_into_spares_and_a_lost_spare_gives_way_to_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let spares = Spares::default();
        write(root, "messages/a.eml", b"first", &spares);
        assert_eq!(temporaries(root), 0);
        assert!(spares.low());
        spares.refill(root, false);
        assert_eq!(temporaries(root), SPARE_FILES);
        assert!(!spares.low(), "full: the next batch needs no refill");
        write(root, "messages/b.eml", b"second", &spares);
        assert_eq!(temporaries(root), SPARE_FILES - 1, "the body took a spare");
        // Removed by hand: the spares left are gone, the write still lands.
        std::fs::remove_dir_all(root.join(TMP_DIR)).unwrap();
        write(root, "messages/c.eml", b"third", &spares);
        assert_eq!(temporaries(root), 0);
        // A root without its marker is a bare mount point: no spare is made there.
        spares.refill(root, true);
        assert_eq!(temporaries(root), 0);
        std::fs::write(root.join(MARKER_KEY), "id").unwrap();
        spares.refill(root, true);
        assert_eq!(temporaries(root), SPARE_FILES);
        drop(spares);
        assert_eq!(temporaries(root), 0, "the spares go with the store");
    }
}
