//! `server.pid_file`: one running server per file, and a way for the CLI to tell which
//! process that is without trusting the file's text alone.
//!
//! The server creates the file with `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0600) and holds an
//! exclusive `flock` on it for its whole life; the lock, not the file's existence, says
//! that a server runs. A file nobody holds is stale (a crash, a kill -9): the next server
//! locks that same file and writes its own id into it, so there is no window in which
//! two servers believe they own it. A symbolic link, a file with more than one name or a
//! file of another user at the path is refused rather than written through. The server
//! removes the file at exit, and only while the path still names the file it locked.
//!
//! The CLI (`mairust reload`, `mairust restore`) reads which process holds the lock from
//! `/proc/locks`, without taking a lock itself (a probe lock could make a starting
//! server refuse to start).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The server's hold on its pid file; dropping it removes the file.
pub struct PidFile {
    path: PathBuf,
    file: File,
}

impl PidFile {
    /// Creates or takes over `path` for this process and locks it. The file stays empty
    /// until [`PidFile::publish`]: `mairust reload` must not send SIGHUP before the
    /// server handles it (the default action of SIGHUP ends the process).
    pub fn acquire(path: &Path) -> anyhow::Result<PidFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            mairust_actors::private_dir::create_private_dir(dir)
                .with_context(|| format!("server.pid_file: cannot create {}", dir.display()))?;
        }
        // A few rounds: another process may remove or replace the file between our open
        // and our lock.
        for _ in 0..10 {
            let file = match open_new(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match open_existing(path, true) {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(refusal(path, e)),
                    }
                }
                Err(e) => return Err(refusal(path, e)),
            };
            check_owned_regular(path, &file)?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let holder = file
                        .metadata()
                        .ok()
                        .and_then(|m| lock_holder(m.ino()))
                        .map_or("another process".to_string(), |pid| {
                            format!("process {pid}")
                        });
                    bail!(
                        "server.pid_file {} is held by {holder}: a server with this pid file is already running; stop it first, or give this one another server.pid_file",
                        path.display()
                    );
                }
                return Err(err)
                    .with_context(|| format!("server.pid_file: cannot lock {}", path.display()));
            }
            // The lock is ours; is it still the file at the path? A stale file removed
            // after we opened it must not be the one we hold.
            if !names_file(path, &file) {
                continue;
            }
            file.set_len(0)
                .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o600)))
                .with_context(|| format!("server.pid_file: cannot reset {}", path.display()))?;
            return Ok(PidFile {
                path: path.to_path_buf(),
                file,
            });
        }
        bail!(
            "server.pid_file {} kept changing while this server tried to take it: is another process creating and removing it?",
            path.display()
        )
    }

    /// Writes this process's id, once the server is ready to handle SIGHUP.
    pub fn publish(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt;
        let text = format!("{}\n", std::process::id());
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(text.as_bytes(), 0))
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("server.pid_file: cannot write {}", self.path.display()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own file: an operator may have removed it, and another server made a
        // new one, since.
        if names_file(&self.path, &self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
        // The lock goes with the descriptor.
    }
}

/// `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600: never through a link, never someone else's.
fn open_new(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// An existing pid file, never through a symbolic link at its last component
/// (`O_NONBLOCK`: a FIFO planted at the path must not hang the open).
fn open_existing(path: &Path, write: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// The error for a pid file that cannot be opened, naming a symbolic link as such.
fn refusal(path: &Path, e: std::io::Error) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        anyhow::anyhow!(
            "server.pid_file {} is a symbolic link: refused (a pid file is never written through a link); remove it",
            path.display()
        )
    } else {
        anyhow::Error::new(e).context(format!("server.pid_file: cannot open {}", path.display()))
    }
}

/// A regular file of this user with one name: anything else at the path was not made
/// by a server and is not ours to truncate.
fn check_owned_regular(path: &Path, file: &File) -> anyhow::Result<()> {
    let meta = file
        .metadata()
        .with_context(|| format!("server.pid_file: cannot stat {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!(
            "server.pid_file {} is not a regular file: refused",
            path.display()
        );
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "server.pid_file {} belongs to user id {}, not to this user ({me}): refused; remove it or run the server as its owner",
            path.display(),
            meta.uid()
        );
    }
    if meta.nlink() != 1 {
        bail!(
            "server.pid_file {} has {} names (a hard link): refused; remove it",
            path.display(),
            meta.nlink()
        );
    }
    Ok(())
}

/// Whether `path` (not followed) is the file behind `file`.
fn names_file(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(at_path), Ok(ours)) => at_path.dev() == ours.dev() && at_path.ino() == ours.ino(),
        _ => false,
    }
}

/// The process holding an exclusive `flock` on the file with inode `ino`, from
/// `/proc/locks` (lines such as `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`;
/// waiters are marked `->` and skipped).
pub fn lock_holder(ino: u64) -> Option<i32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") {
            return None;
        }
        let [_, kind, _, mode, pid, id, ..] = fields.as_slice() else {
            return None;
        };
        let inode = id.rsplit(':').next()?.parse::<u64>().ok()?;
        (*kind == "FLOCK" && *mode == "WRITE" && inode == ino)
            .then(|| pid.parse::<i32>().ok())
            .flatten()
    })
}

/// What the CLI learns from a pid file.
pub struct Observed {
    /// The id written in the file (none while the server starts).
    pub pid: Option<i32>,
    /// The process holding the file's lock: a running server.
    pub holder: Option<i32>,
    /// The file's inode, to look its lock holder up again later.
    pub ino: u64,
}

/// Reads the pid file at `path` without following a link and without locking it.
/// `Ok(None)` when there is no file.
pub fn observe(path: &Path) -> anyhow::Result<Option<Observed>> {
    let mut file = match open_existing(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "{} is a symbolic link, not a pid file a server wrote: refused",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("{} is not a regular file: not a pid file", path.display());
    }
    let mut text = String::new();
    file.by_ref()
        .take(64)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(Observed {
        pid: text.trim().parse().ok().filter(|p| *p > 0),
        holder: lock_holder(meta.ino()),
        ino: meta.ino(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_the_owner_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/mairust.pid");
        let first = PidFile::acquire(&path).unwrap();
        first.publish().unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(lock_holder(ino), Some(std::process::id() as i32));
        // flock locks belong to the open file description: a second open in this same
        // process conflicts like another process would.
        let err = PidFile::acquire(&path).err().expect("refused").to_string();
        assert!(err.contains("already running"), "{err}");
        let seen = observe(&path).unwrap().unwrap();
        assert_eq!(seen.pid, Some(std::process::id() as i32));
        drop(first);
        assert!(!path.exists());
        assert!(observe(&path).unwrap().is_none());
    }

    #[test]
    fn a_stale_file_is_taken_over_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mairust.pid");
        std::fs::write(&path, "999999\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let taken = PidFile::acquire(&path).unwrap();
        taken.publish().unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(taken);

        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let err = PidFile::acquire(&path).err().expect("refused").to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_file(&path).unwrap();

        std::fs::hard_link(&victim, &path).unwrap();
        let err = PidFile::acquire(&path).err().expect("refused").to_string();
        assert!(err.contains("hard link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn proc_locks_lines_are_read() {
        // Our own lock shows up; a file nobody locks has no holder.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let ino = file.metadata().unwrap().ino();
        assert_eq!(lock_holder(ino), None);
        // SAFETY: flock on our own descriptor.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert_eq!(lock_holder(ino), Some(std::process::id() as i32));
    }
}
