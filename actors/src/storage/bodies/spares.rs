//! Empty files made ahead of the bodies that will fill them (`fs`): temporaries, or
//! placed at their final key (see [`Spares`]).

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::layout::{STALE_TEMPORARY, TMP_DIR, make_dirs, present, temporary_name};

/// A file made ahead at its final key (see [`Spares`], placed mode), reserved for one
/// message: the StorageActor makes its key the message's object key before the rows are
/// written. The body is written into it in place: no rename, and no directory flush
/// (the name was flushed when the file was made). Dropped unwritten (the message failed
/// elsewhere, the actor restarted), its file is removed.
pub struct Placed {
    key: String,
    pub(super) spare: Option<Spare>,
}

impl Placed {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            let _ = std::fs::remove_file(&spare.path);
        }
    }
}

/// Empty files made ahead of the bodies that will fill them (fs). Creating a file is the
/// slowest metadata step of a write on some file systems (ext4 without a journal checks
/// every inode of the group deleted in the last minutes: about 1 ms a file after a large
/// deletion), so it is done after a batch is answered ([`Spares::refill`]), not while
/// its callers wait. Spares are kept open (a volume holding the store cannot be
/// unmounted while the server runs anyway) and removed when the store is dropped.
///
/// Two kinds, one per store:
/// - temporaries in [`TMP_DIR`] (the default): a body written into one goes through the
///   same write, flush and rename as into a new file. A kill leaves them to the sweep
///   of stale temporaries.
/// - placed ([`Spares::place`], SQLite: one node writes the store): files made in the
///   directory of the current hour under `messages/`, whose names are flushed before
///   they are used. The StorageActor reserves one per message ([`Spares::take_placed`])
///   and its name becomes the message's object key: the body is written in place, with
///   one flush and no rename or directory flush on the path a caller waits on. A kill
///   leaves them as empty files under `messages/`, which no row refers to: `mairust db
///   check --fix` removes those (never younger than [`STALE_TEMPORARY`], so never the
///   spares of a running server, which are used only while younger than
///   [`SPARE_MAX_AGE`]).
#[derive(Default)]
pub(super) struct Spares {
    /// Oldest first.
    files: std::sync::Mutex<std::collections::VecDeque<Spare>>,
    refilling: std::sync::atomic::AtomicBool,
    placed: std::sync::atomic::AtomicBool,
    /// Placed mode: the directory whose name [`PLACED_DIRS`] got last, and that file's
    /// path once written (removed with the spares).
    listed: Mutex<(Option<String>, Option<std::path::PathBuf>)>,
}

pub(super) struct Spare {
    pub(super) path: std::path::PathBuf,
    pub(super) file: std::fs::File,
    pub(super) made: std::time::Instant,
    /// A placed spare's object key.
    key: Option<String>,
}

/// Spares kept: a batch at low concurrency finds them all made; a larger batch makes
/// the rest as it goes.
pub const SPARE_FILES: usize = 32;

/// A spare is used only while younger than this, well before the sweep of stale
/// temporaries ([`STALE_TEMPORARY`]) could remove it under a writer; older ones are
/// removed by the next refill.
pub(super) const SPARE_MAX_AGE: Duration = Duration::from_secs(STALE_TEMPORARY.as_secs() / 2);

impl Spares {
    /// From now on, spares are made in place (see the type).
    pub(super) fn place(&self) {
        self.placed.store(true, Ordering::Release);
    }

    /// The newest spare, if it is young enough and of the kind `placed` (never any file
    /// work here: this is on the path a caller waits on).
    fn newest(&self, placed: bool) -> Option<Spare> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files
            .back()
            .is_some_and(|spare| {
                spare.made.elapsed() < SPARE_MAX_AGE && spare.key.is_some() == placed
            })
            .then(|| files.pop_back())
            .flatten()
    }

    /// A temporary spare for a body written the usual way.
    pub(super) fn take(&self) -> Option<Spare> {
        self.newest(false)
    }

    /// A placed spare reserved for one message, if one is ready.
    pub(super) fn take_placed(&self) -> Option<Placed> {
        let spare = self.newest(true)?;
        Some(Placed {
            key: spare.key.clone().unwrap_or_default(),
            spare: Some(spare),
        })
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
    pub(super) fn forget(&self) {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Removes the expired spares (and those of the other kind) and makes new ones up
    /// to [`SPARE_FILES`] (blocking; one refill at a time, a second call meanwhile
    /// returns at once). With `marked`, only while the root holds the identity marker:
    /// a root without it is a bare mount point, where nothing is written. Placed spares
    /// are handed out only once their names are flushed (with `fsync`).
    pub(super) fn refill(&self, root: &std::path::Path, marked: bool, fsync: bool) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let placed = self.placed.load(Ordering::Acquire);
        let expired: std::collections::VecDeque<Spare> = {
            let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            let (keep, expired) = files.drain(..).partition(|spare| {
                spare.made.elapsed() < SPARE_MAX_AGE && spare.key.is_some() == placed
            });
            *files = keep;
            expired
        };
        for spare in expired {
            let _ = std::fs::remove_file(&spare.path);
        }
        let missing = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            SPARE_FILES.saturating_sub(files.len())
        };
        if missing > 0 && present(root, marked) {
            let made = if placed {
                let dir_key = placed_dir_key();
                self.list_dir(root, &dir_key, fsync)
                    .map(|new| make_placed(root, &dir_key, new, missing, fsync))
                    .unwrap_or_default()
            } else {
                make_temporaries(root, missing)
            };
            self.files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(made);
        }
        self.refilling.store(false, Ordering::Release);
    }
}

/// Up to `n` temporary spares in [`TMP_DIR`] (fewer on a full or failing disk: the next
/// write reports it).
fn make_temporaries(root: &std::path::Path, n: usize) -> Vec<Spare> {
    let tmp_dir = root.join(TMP_DIR);
    if !tmp_dir.is_dir() {
        return Vec::new();
    }
    create_spares(n, || (temporary_name(&tmp_dir), None))
}

/// Up to `n` new empty files at the paths `next` gives (with a placed spare's key),
/// fewer on a full or failing disk.
fn create_spares(
    n: usize,
    mut next: impl FnMut() -> (std::path::PathBuf, Option<String>),
) -> Vec<Spare> {
    let mut made = Vec::new();
    for _ in 0..n {
        let (path, key) = next();
        let Ok(file) = std::fs::File::create_new(&path) else {
            break;
        };
        made.push(Spare {
            path,
            file,
            made: std::time::Instant::now(),
            key,
        });
    }
    made
}

impl Spares {
    /// Placed mode: records `dir_key` in [`PLACED_DIRS`] before the first spare is made
    /// there (flushed with `fsync`), so that the next start finds what a kill leaves
    /// ([`sweep_placed`]). The list holds that directory and the one before (where the
    /// spares still in use may be: a spare is used only while younger than
    /// [`SPARE_MAX_AGE`]), rewritten once an hour. Returns whether `dir_key` is new
    /// (its ancestors are flushed then), `None` when it cannot be recorded: no spare is
    /// made then.
    fn list_dir(&self, root: &std::path::Path, dir_key: &str, fsync: bool) -> Option<bool> {
        use std::io::Write;
        let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        if listed.0.as_deref() == Some(dir_key) {
            return Some(false);
        }
        let tmp_dir = root.join(TMP_DIR);
        let path = tmp_dir.join(PLACED_DIRS);
        let next = tmp_dir.join(format!("{PLACED_DIRS}.new"));
        let mut lines = String::new();
        if let Some(before) = &listed.0 {
            lines.push_str(&format!("{before}\n"));
        }
        lines.push_str(&format!("{dir_key}\n"));
        let recorded = std::fs::File::create(&next).and_then(|mut list| {
            list.write_all(lines.as_bytes())?;
            if fsync {
                list.sync_data()?;
            }
            std::fs::rename(&next, &path)?;
            if fsync {
                std::fs::File::open(&tmp_dir)?.sync_all()?;
            }
            Ok(())
        });
        if recorded.is_err() {
            let _ = std::fs::remove_file(&next);
            return None;
        }
        *listed = (Some(dir_key.to_string()), Some(path));
        Some(true)
    }
}

/// In [`TMP_DIR`]: the directories placed spares were made in, a line each. Removed
/// with the spares when the store is dropped (a clean stop); found at the next start
/// after a kill.
pub(super) const PLACED_DIRS: &str = "placed-dirs";

/// Where placed spares are made now: the directory of the current hour.
fn placed_dir_key() -> String {
    format!("messages/{}", chrono::Utc::now().format("%Y-%m-%d/%H"))
}

/// At start, before any spare is made (SQLite): removes the placed spares a kill left,
/// the empty `.eml` files in the directories [`PLACED_DIRS`] lists (a body is never
/// empty, and the rows of a message whose body was never written were removed by the
/// journal's recovery before) once older than `older_than`: zero when this process
/// holds the pid file's lock (nobody else writes), [`STALE_TEMPORARY`] otherwise
/// (another process may be using its own). The list goes once nothing younger is left.
/// Returns how many were removed.
pub fn sweep_placed(root: &std::path::Path, older_than: Duration) -> std::io::Result<usize> {
    let list = root.join(TMP_DIR).join(PLACED_DIRS);
    let dirs = match std::fs::read_to_string(&list) {
        Ok(dirs) => dirs,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let (mut removed, mut young) = (0, 0);
    for dir_key in dirs.lines().filter(|l| l.starts_with("messages/")) {
        let entries = match std::fs::read_dir(root.join(dir_key)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let is_body = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".eml"));
            let Ok(meta) = entry.metadata() else { continue };
            if !(is_body && meta.is_file() && meta.len() == 0) {
                continue;
            }
            if age(&meta) < older_than {
                young += 1;
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    if young == 0 {
        std::fs::remove_file(&list)?;
    }
    Ok(removed)
}

/// How long ago a file was last written, by the wall clock (what `db check` sees); zero
/// for a time ahead of the clock.
pub(super) fn age(meta: &std::fs::Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|modified| std::time::SystemTime::now().duration_since(modified).ok())
        .unwrap_or(Duration::ZERO)
}

/// Up to `n` placed spares in `dir_key`, their names flushed (with `fsync`), and for a
/// `new` directory its ancestors' entries too, whoever made them; none when that fails
/// (the files made are removed again).
fn make_placed(
    root: &std::path::Path,
    dir_key: &str,
    new: bool,
    n: usize,
    fsync: bool,
) -> Vec<Spare> {
    // The store's own temporary directory is there (a bare mount point has none): no
    // directory is made anywhere else.
    if !root.join(TMP_DIR).is_dir() {
        return Vec::new();
    }
    let dir = root.join(dir_key);
    let Ok(mut flush) = make_dirs(root, &dir) else {
        return Vec::new();
    };
    flush.push(dir.clone());
    if new {
        flush.extend(
            dir.ancestors()
                .skip(1)
                .take_while(|d| d.starts_with(root))
                .map(std::path::Path::to_path_buf),
        );
        flush.sort();
        flush.dedup();
    }
    let mut made = create_spares(n, || {
        let key = format!("{dir_key}/{}.eml", uuid::Uuid::now_v7());
        (root.join(&key), Some(key))
    });
    let flushed = !fsync
        || flush
            .iter()
            .all(|dir| std::fs::File::open(dir).and_then(|d| d.sync_all()).is_ok());
    if !flushed {
        for spare in made.drain(..) {
            let _ = std::fs::remove_file(&spare.path);
        }
    }
    made
}

impl Drop for Spares {
    fn drop(&mut self) {
        let files = self.files.get_mut().unwrap_or_else(|e| e.into_inner());
        for spare in files.drain(..) {
            let _ = std::fs::remove_file(&spare.path);
        }
        // Nothing placed is left to find (reserved ones went with the StorageActor).
        let listed = self.listed.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = listed.1.take() {
            let _ = std::fs::remove_file(list);
        }
    }
}
