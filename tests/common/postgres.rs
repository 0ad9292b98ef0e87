//! A PostgreSQL server of the test's own (initdb in a temporary directory, its own port
//! on loopback), for tests that need a setting the shared one lacks: TLS with a
//! certificate the test made. Run as the `postgres` user when the tests run as root
//! (PostgreSQL refuses root), stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OwnPostgres {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// PostgreSQL's server programs (Debian keeps them out of PATH).
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program` to run as the user PostgreSQL runs as (`postgres` when we are root).
fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    if as_root() {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = postgres_ids();
        c.uid(uid).gid(gid);
    }
    c
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a postgres user")
    };
    (id("-u"), id("-g"))
}

impl OwnPostgres {
    /// Whether the server programs are here; outside CI a test without them is skipped.
    pub fn available() -> bool {
        super::tool_available(
            bin_dir().is_some(),
            "PostgreSQL's server programs",
            "Debian package postgresql",
        )
    }

    /// initdb, then the server with `settings` (`name=value` each) on a free port.
    /// `files` are copied into the data directory first (certificates, keys), owned
    /// by the server's user with mode 0600.
    pub fn start(settings: &[String], files: &[(&str, &Path)]) -> OwnPostgres {
        let bin = bin_dir().expect("PostgreSQL server programs");
        // Under /tmp whatever TMPDIR says: the server's user must reach it (not under
        // /root, say).
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let data = dir.path().join("data");
        chown_to_postgres(dir.path());
        let out = command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .stdin(Stdio::null())
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, from) in files {
            let to = data.join(name);
            std::fs::copy(from, &to).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            chown_to_postgres(&to);
        }
        let port = super::free_port();
        let mut c = command(&bin.join("postgres"));
        super::die_with_test(&mut c);
        c.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "fsync=off"]);
        for s in settings {
            c.args(["-c", s]);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let mut pg = OwnPostgres {
            port,
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = pg.child.as_mut().map(|c| c.try_wait()) {
                panic!("postgres exited at start ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pg
    }

    /// The temporary directory (certificates made by the test can go there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn chown_to_postgres(path: &Path) {
    if !as_root() {
        return;
    }
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: fast shutdown.
            // SAFETY: a signal to the child this harness started.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
