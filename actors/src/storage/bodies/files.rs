//! The `fs` backend's own writes: bodies in place into a file made ahead at their key
//! ([`Placed`]), or through a temporary file (a spare when there is one: [`Spares`]) and
//! a rename; flushed in batches (fsync of the files in parallel threads, then once per
//! directory that got new names); and the sweep of the temporaries a crash or a failed
//! write leaves behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use bytes::Bytes;

use super::BodyError;
use super::layout::{TMP_DIR, make_dirs, present, temporary_name};
use super::spares::{Placed, SPARE_MAX_AGE, Spare, Spares, age};
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

/// One body for [`write_files`]: its key and, when the StorageActor reserved one, the
/// file made for it ahead at that key ([`Placed`]).
pub struct Object {
    pub key: String,
    pub body: Bytes,
    pub placed: Option<Placed>,
}

/// Writes each object as `root/key`, so that a reader never sees half an object in a
/// name a row refers to once its message is acknowledged: through a temporary file and
/// a rename, or in place into its [`Placed`] file. With `fsync`, each file's data is
/// flushed (in parallel threads for a batch, so the block layer merges their flushes),
/// then each directory that got new names is flushed once. The root must exist, and
/// with `marked` hold the identity marker (one `stat` a batch): a missing root or marker
/// is an unmounted volume, not a place to write bodies into.
pub(super) fn write_files(
    root: &std::path::Path,
    objects: Vec<Object>,
    fsync: bool,
    marked: bool,
    spares: &Arc<Spares>,
) -> std::io::Result<()> {
    if !present(root, marked) {
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
    let dirs: Vec<Vec<std::path::PathBuf>> = if fsync && objects.len() > 1 {
        write_in_parallel(root, &tmp_dir, objects, spares)?
    } else {
        objects
            .into_iter()
            .map(|object| write_object(root, &tmp_dir, object, fsync, spares))
            .collect::<std::io::Result<_>>()?
    };
    if fsync {
        let mut dirs: Vec<std::path::PathBuf> = dirs.into_iter().flatten().collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            std::fs::File::open(&dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Writes and flushes a batch's files in up to [`MAX_FLUSH_THREADS`] threads at once:
/// this one and [`FlushThreads`]. Each flush waits for the disk; side by side, the
/// block layer merges them.
fn write_in_parallel(
    root: &std::path::Path,
    tmp_dir: &std::path::Path,
    objects: Vec<Object>,
    spares: &Arc<Spares>,
) -> std::io::Result<Vec<Vec<std::path::PathBuf>>> {
    let per_thread = objects.len().div_ceil(MAX_FLUSH_THREADS);
    let mut chunks: Vec<Vec<Object>> = Vec::new();
    for object in objects {
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < per_thread => chunk.push(object),
            _ => chunks.push(vec![object]),
        }
    }
    let mut chunks = chunks.into_iter();
    let mine = chunks.next().unwrap_or_default();
    let (done, results) = mpsc::channel();
    let mut handed = 0;
    for chunk in chunks {
        let (root, tmp_dir) = (root.to_path_buf(), tmp_dir.to_path_buf());
        let (spares, done) = (spares.clone(), done.clone());
        FlushThreads::get().run(Box::new(move || {
            let written = chunk
                .into_iter()
                .map(|object| write_object(&root, &tmp_dir, object, true, &spares))
                .collect::<std::io::Result<Vec<_>>>();
            let _ = done.send(written);
        }));
        handed += 1;
    }
    drop(done);
    let mine: std::io::Result<Vec<_>> = mine
        .into_iter()
        .map(|object| write_object(root, tmp_dir, object, true, spares))
        .collect();
    // Every thread's answer, even after a failure here: none still writes on return.
    let answers: Vec<_> = results.iter().collect();
    let mut dirs = mine?;
    if answers.len() < handed {
        return Err(std::io::Error::other("a body writer thread panicked"));
    }
    for answer in answers {
        dirs.extend(answer?);
    }
    Ok(dirs)
}

type FlushJob = Box<dyn FnOnce() + Send>;

/// The threads [`write_in_parallel`] hands chunks to, kept for the process's life (idle,
/// they wait on a channel). A thread made for each batch cost a clone, a stack mapping
/// and an exit every time: a sixth of the body lane's CPU at 20 sessions.
struct FlushThreads {
    jobs: Mutex<mpsc::Sender<FlushJob>>,
    queue: Arc<Mutex<mpsc::Receiver<FlushJob>>>,
    threads: AtomicUsize,
}

impl FlushThreads {
    fn get() -> &'static FlushThreads {
        static THREADS: OnceLock<FlushThreads> = OnceLock::new();
        THREADS.get_or_init(|| {
            let (jobs, queue) = mpsc::channel();
            FlushThreads {
                jobs: Mutex::new(jobs),
                queue: Arc::new(Mutex::new(queue)),
                threads: AtomicUsize::new(0),
            }
        })
    }

    /// Runs `job` on one of the threads, starting one more while fewer than one per
    /// chunk a batch can hand out exist (a thread that cannot be started is not: the
    /// others take the job, or this one when there is none).
    fn run(&self, job: FlushJob) {
        if self.threads.load(Ordering::Acquire) < MAX_FLUSH_THREADS - 1 {
            self.start_one();
        }
        if self.threads.load(Ordering::Acquire) == 0 {
            return job();
        }
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        // The receiving end lives as long as this static: a send cannot fail.
        let _ = jobs.send(job);
    }

    fn start_one(&self) {
        if self.threads.fetch_add(1, Ordering::AcqRel) >= MAX_FLUSH_THREADS - 1 {
            self.threads.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let queue = self.queue.clone();
        let started = std::thread::Builder::new()
            .name("body-flush".into())
            .spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = job else { return };
                    // A panicking job drops its answer's sender: its batch fails.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        if started.is_err() {
            self.threads.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Writes one object; returns the directories that got new names (flushed once per
/// batch): none for a body written into its placed file.
fn write_object(
    root: &std::path::Path,
    tmp_dir: &std::path::Path,
    object: Object,
    fsync: bool,
    spares: &Arc<Spares>,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    let path = root.join(&object.key);
    if let Some(spare) = object.placed.and_then(|mut placed| placed.spare.take())
        && write_placed(&object.body, fsync, spare)?
    {
        return Ok(Vec::new());
    }
    let mut dirs = write_file(root, tmp_dir, &path, &object.body, fsync, spares)?;
    dirs.push(path.parent().unwrap_or(root).to_path_buf());
    Ok(dirs)
}

/// Writes `body` into its placed file; `false` when that file may not be used any more
/// and the body goes the usual way to the same key (the rename replaces the file): it
/// is older than [`SPARE_MAX_AGE`], by this process's clock or by its modification
/// time on the wall clock (`mairust db check --fix` removes an empty file once that
/// says it is older than [`super::STALE_TEMPORARY`]), or its name was removed meanwhile.
fn write_placed(body: &[u8], fsync: bool, spare: Spare) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    if spare.made.elapsed() >= SPARE_MAX_AGE || age(&spare.file.metadata()?) >= SPARE_MAX_AGE {
        return Ok(false);
    }
    let mut file = spare.file;
    file.write_all(body)?;
    if fsync {
        file.sync_data()?;
    }
    Ok(file.metadata()?.nlink() > 0)
}

/// Writes one body through a temporary file (a spare when there is one) renamed to
/// `path`; returns the directories whose entries changed because this call created
/// directories (their parents need a flush too). A failed write removes its temporary
/// file (on a full disk it would keep the space).
fn write_file(
    root: &std::path::Path,
    tmp_dir: &std::path::Path,
    path: &std::path::Path,
    body: &[u8],
    fsync: bool,
    spares: &Arc<Spares>,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    match spares.take() {
        Some(spare) => match write_into(root, path, body, fsync, &spare.path, Some(spare.file)) {
            // The spare went away under it (its directory removed by hand; on NFS, swept
            // by another node: ESTALE): a new file.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ESTALE) =>
            {
                // The others were made in the same place.
                spares.forget();
                write_into(root, path, body, fsync, &temporary_name(tmp_dir), None)
            }
            written => written,
        },
        None => write_into(root, path, body, fsync, &temporary_name(tmp_dir), None),
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
        let created = make_dirs(root, path.parent().unwrap_or(root))?;
        std::fs::rename(tmp, path)?;
        Ok(created)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

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
    use super::super::MARKER_KEY;
    use super::super::spares::{PLACED_DIRS, SPARE_FILES, sweep_placed};
    use super::*;

    fn temporaries(root: &std::path::Path) -> usize {
        std::fs::read_dir(root.join(TMP_DIR))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".eml.tmp")
            })
            .count()
    }

    fn object(key: &str, body: &'static [u8], placed: Option<Placed>) -> Object {
        Object {
            key: key.to_string(),
            body: Bytes::from_static(body),
            placed,
        }
    }

    fn write(root: &std::path::Path, key: &str, body: &'static [u8], spares: &Arc<Spares>) {
        write_at(root, key, body, None, spares);
    }

    /// Writes one body (into `placed`, if any) and checks it is at `key`.
    fn write_at(
        root: &std::path::Path,
        key: &str,
        body: &'static [u8],
        placed: Option<Placed>,
        spares: &Arc<Spares>,
    ) {
        write_files(root, vec![object(key, body, placed)], true, false, spares).unwrap();
        assert_eq!(std::fs::read(root.join(key)).unwrap(), body);
    }

    /// A store root whose temporary spares gave way to placed ones.
    fn placed_store() -> (tempfile::TempDir, Arc<Spares>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(TMP_DIR)).unwrap();
        let spares = Arc::new(Spares::default());
        spares.refill(dir.path(), false, true);
        spares.place();
        spares.refill(dir.path(), false, true);
        (dir, spares)
    }

    fn inode(root: &std::path::Path, key: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(root.join(key)).unwrap().ino()
    }

    /// The files under `dir`, by size: (empty, not empty).
    fn files_in(dir: &std::path::Path) -> (usize, usize) {
        let sizes: Vec<u64> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().metadata().unwrap().len())
                    .collect()
            })
            .unwrap_or_default();
        let empty = sizes.iter().filter(|&&n| n == 0).count();
        (empty, sizes.len() - empty)
    }

    #[test]
    fn bodies_go_into_spares_and_a_lost_spare_gives_way_to_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let spares = Arc::new(Spares::default());
        write(root, "messages/a.eml", b"first", &spares);
        assert_eq!(temporaries(root), 0);
        assert!(spares.low());
        spares.refill(root, false, true);
        assert_eq!(temporaries(root), SPARE_FILES);
        assert!(!spares.low(), "full: the next batch needs no refill");
        assert!(spares.take_placed().is_none(), "temporaries are not placed");
        write(root, "messages/b.eml", b"second", &spares);
        assert_eq!(temporaries(root), SPARE_FILES - 1, "the body took a spare");
        // Removed by hand: the spares left are gone, the write still lands.
        std::fs::remove_dir_all(root.join(TMP_DIR)).unwrap();
        write(root, "messages/c.eml", b"third", &spares);
        assert_eq!(temporaries(root), 0);
        // A root without its marker is a bare mount point: no spare is made there.
        spares.refill(root, true, true);
        assert_eq!(temporaries(root), 0);
        std::fs::write(root.join(MARKER_KEY), "id").unwrap();
        spares.refill(root, true, true);
        assert_eq!(temporaries(root), SPARE_FILES);
        drop(spares);
        assert_eq!(temporaries(root), 0, "the spares go with the store");
    }

    #[test]
    fn placed_bodies_are_written_in_place_and_unwritten_places_are_removed() {
        let (dir, spares) = placed_store();
        let root = dir.path();
        assert_eq!(
            temporaries(root),
            0,
            "the temporaries gave way to placed spares"
        );
        let placed = spares.take_placed().expect("a placed spare");
        let key = placed.key().to_string();
        let hour = root.join(std::path::Path::new(&key).parent().unwrap());
        assert!(
            key.starts_with("messages/") && key.ends_with(".eml"),
            "{key}"
        );
        assert_eq!(files_in(&hour), (SPARE_FILES, 0));
        assert!(spares.take().is_none(), "placed spares are not temporaries");

        // A batch: two bodies in their places, one the usual way.
        let other = spares.take_placed().unwrap();
        let other_key = other.key().to_string();
        let made = inode(root, &key);
        let batch = vec![
            object(&key, b"in place", Some(placed)),
            object("messages/x/usual.eml", b"usual", None),
            object(&other_key, b"also in place", Some(other)),
        ];
        write_files(root, batch, true, false, &spares).unwrap();
        assert_eq!(std::fs::read(root.join(&key)).unwrap(), b"in place");
        assert_eq!(
            inode(root, &key),
            made,
            "written in place, not renamed over"
        );
        assert_eq!(
            std::fs::read(root.join(&other_key)).unwrap(),
            b"also in place"
        );
        assert_eq!(
            std::fs::read(root.join("messages/x/usual.eml")).unwrap(),
            b"usual"
        );
        assert_eq!(files_in(&hour), (SPARE_FILES - 2, 2));
        assert_eq!(temporaries(root), 0);

        // Reserved but never written: its file goes.
        drop(spares.take_placed().unwrap());
        assert_eq!(files_in(&hour), (SPARE_FILES - 3, 2));

        // Its name removed meanwhile: the body still lands at its key.
        let gone = spares.take_placed().unwrap();
        let gone_key = gone.key().to_string();
        std::fs::remove_file(root.join(&gone_key)).unwrap();
        write_at(root, &gone_key, b"again", Some(gone), &spares);

        // Too old to be written in place, by this process's clock or by the file's
        // time: the body replaces it the usual way (a new file renamed over it).
        let mut old = spares.take_placed().unwrap();
        let old_key = old.key().to_string();
        let made = inode(root, &old_key);
        if let Some(spare) = old.spare.as_mut() {
            spare.made = std::time::Instant::now()
                .checked_sub(SPARE_MAX_AGE)
                .unwrap();
        }
        write_at(root, &old_key, b"late", Some(old), &spares);
        assert_ne!(inode(root, &old_key), made);
        let stale = spares.take_placed().unwrap();
        let stale_key = stale.key().to_string();
        let made = inode(root, &stale_key);
        std::fs::File::options()
            .write(true)
            .open(root.join(&stale_key))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - SPARE_MAX_AGE)
            .unwrap();
        write_at(root, &stale_key, b"later", Some(stale), &spares);
        assert_ne!(inode(root, &stale_key), made);
        assert_eq!(temporaries(root), 0);

        drop(spares);
        assert_eq!(
            files_in(&hour),
            (0, 5),
            "the unused spares go with the store"
        );
        assert!(
            !root.join(TMP_DIR).join(PLACED_DIRS).exists(),
            "a clean stop leaves no list"
        );
        assert_eq!(sweep_placed(root, Duration::ZERO).unwrap(), 0);
    }

    #[test]
    fn the_next_start_removes_the_placed_spares_a_kill_left() {
        let (dir, spares) = placed_store();
        let root = dir.path();
        let placed = spares.take_placed().unwrap();
        let key = placed.key().to_string();
        let hour = root.join(std::path::Path::new(&key).parent().unwrap());
        write_files(
            root,
            vec![object(&key, b"kept", Some(placed))],
            true,
            false,
            &spares,
        )
        .unwrap();
        let reserved = spares.take_placed().unwrap();
        // Killed: nothing is dropped.
        std::mem::forget(reserved);
        std::mem::forget(spares);
        assert_eq!(files_in(&hour), (SPARE_FILES - 1, 1));
        // Another process may still use young ones: only old ones go then.
        assert_eq!(
            sweep_placed(root, super::super::STALE_TEMPORARY).unwrap(),
            0
        );
        assert!(root.join(TMP_DIR).join(PLACED_DIRS).exists());
        assert_eq!(sweep_placed(root, Duration::ZERO).unwrap(), SPARE_FILES - 1);
        assert_eq!(files_in(&hour), (0, 1), "the body stays");
        assert_eq!(std::fs::read(root.join(&key)).unwrap(), b"kept");
        assert!(!root.join(TMP_DIR).join(PLACED_DIRS).exists());
    }
}
