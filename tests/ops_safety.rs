//! Operations safety (issue 13): what the server creates is its owner's alone whatever
//! the umask; secret files others can read are named at start; one server per pid
//! file, never written through a link; `mairust reload` signals only a process it has
//! verified to be this same binary holding the pid file.
//!
//! Every test here runs its processes with umask 022, the usual default.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{BIN, Options, TestServer, assert_refused, deliver_to_bob, output};

/// The usual umask, for every process these tests start.
fn usual_umask() {
    // SAFETY: umask only changes the creation mask that children inherit.
    unsafe {
        libc::umask(0o022);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

/// Every directory (0700) and file (0600) under `dir`; returns the files.
fn assert_private_tree(dir: &Path) -> Vec<std::path::PathBuf> {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(assert_private_tree(&path));
        } else {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files.push(path);
        }
    }
    files
}

/// `mairust serve` on `config`, expected to refuse: its output once it exited (a
/// server that keeps running is killed and fails the test).
fn serve_refused(config: &Path) -> Output {
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .current_dir(config.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the child this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("a second `mairust serve` kept running instead of refusing");
        }
    }
}

/// A configuration and a database with the test domain, no server yet; the pid file's
/// path.
fn with_a_domain() -> (TestServer, std::path::PathBuf) {
    usual_umask();
    let server = TestServer::prepare(Options::default());
    server.cli_ok(&["domain", "add", common::DOMAIN], None);
    let pid_file = server.dir.path().join("mairust.pid");
    (server, pid_file)
}

#[tokio::test]
async fn a_fresh_server_creates_only_private_files() {
    usual_umask();
    let mut server = TestServer::prepare(Options::default());
    let dir = server.dir.path().to_path_buf();
    let spool = dir.join("data/spool");
    server.reconfigure(Options {
        log_file: true,
        limits_yaml: vec![format!("spool_dir: {}", spool.display())],
        ..Options::default()
    });
    // The database is created by the first CLI command, as in a fresh install.
    server.cli_ok(&["domain", "add", common::DOMAIN], None);
    server.cli_ok(
        &["user", "add", "bob@example.test", "--password-stdin"],
        Some(common::PASSWORD),
    );
    server.spawn();
    assert_eq!(deliver_to_bob(&server, "modes@remote.test").await.code, 250);
    let pid_file = dir.join("mairust.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        server.pid().to_string()
    );
    assert_eq!(mode(&pid_file), 0o600, "pid file");
    assert_eq!(mode(&dir.join("audit.log")), 0o600, "audit file");
    assert_private_tree(&dir.join("log"));
    assert_private_tree(&dir.join("tls"));
    assert_eq!(mode(&dir.join("data")), 0o700, "spool parent");
    assert_eq!(mode(&spool), 0o700, "spool directory");
    if !server.backend.is_postgres() {
        let db = dir.join("mairust.db");
        assert_eq!(mode(&db), 0o600, "database");
        let mut sidecars = 0;
        for suffix in ["-wal", "-shm"] {
            let path = dir.join(format!("mairust.db{suffix}"));
            if path.exists() {
                sidecars += 1;
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
        // The running server has the database open in WAL mode.
        assert!(sidecars > 0, "no -wal/-shm beside the running database");
    }
    if server.backend.s3.is_none() {
        let bodies = assert_private_tree(&dir.join("objects"));
        assert!(
            bodies
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "eml")),
            "no message body under objects/: {bodies:?}"
        );
    }
    let archive = dir.join("backups/full.tar");
    std::fs::create_dir(dir.join("backups")).unwrap();
    server.cli_ok(&["backup", "--output", archive.to_str().unwrap()], None);
    assert_eq!(mode(&archive), 0o600, "backup archive");
}

#[tokio::test]
async fn secret_files_others_can_read_are_named_at_start() {
    usual_umask();
    let mut server = TestServer::start();
    let warned = |server: &TestServer, file: &str| -> Vec<String> {
        server
            .log_lines()
            .iter()
            .filter(|l| l["event"] == "readable_by_others" && l["file"] == file)
            .map(|l| l["path"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // The harness wrote config.yaml with the umask: 0644. The key the server made is
    // private.
    let config = server.config_path.clone();
    let key = server.dir.path().join("tls/key.pem");
    assert_eq!(mode(&config), 0o644);
    assert_eq!(warned(&server, "config"), [config.display().to_string()]);
    assert_eq!(mode(&key), 0o600);
    assert!(warned(&server, "tls_key").is_empty());
    server.kill();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    server.logs.lock().unwrap().clear();
    server.spawn();
    assert_eq!(warned(&server, "tls_key"), [key.display().to_string()]);
    assert!(warned(&server, "config").is_empty());
}

#[tokio::test]
async fn one_server_per_pid_file_and_a_stale_one_is_taken_over() {
    let (mut server, pid_file) = with_a_domain();
    // Left by a crash: nobody holds it, it names a process that is gone.
    std::fs::write(&pid_file, "999999\n").unwrap();
    assert_eq!(mode(&pid_file), 0o644);
    server.spawn();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", server.pid())
    );
    assert_eq!(mode(&pid_file), 0o600);

    let out = serve_refused(&server.config_path);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let text = output(&out);
    assert!(text.contains("already running"), "{text}");
    assert!(text.contains(&pid_file.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("process {}", server.pid())),
        "{text}"
    );
    // The refused one took nothing away from the running one.
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", server.pid())
    );
    assert!(server.wait_ready_status(200, Duration::from_secs(10)).await);

    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(30));
    assert!(!pid_file.exists(), "the owner removes its pid file at exit");
}

#[test]
fn pid_file_links_are_refused() {
    usual_umask();
    let server = TestServer::prepare(Options::default());
    let dir = server.dir.path();
    let pid_file = dir.join("mairust.pid");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();

    std::os::unix::fs::symlink(&victim, &pid_file).unwrap();
    let out = serve_refused(&server.config_path);
    assert_refused(&out, "symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(pid_file.is_symlink(), "the link is left for the operator");
    std::fs::remove_file(&pid_file).unwrap();

    // A dangling link: following it would create the file it names.
    let elsewhere = dir.join("created-through-link");
    std::os::unix::fs::symlink(&elsewhere, &pid_file).unwrap();
    let out = serve_refused(&server.config_path);
    assert_refused(&out, "symbolic link");
    assert!(!elsewhere.exists(), "a file was created through the link");
    std::fs::remove_file(&pid_file).unwrap();

    std::fs::hard_link(&victim, &pid_file).unwrap();
    let out = serve_refused(&server.config_path);
    assert_refused(&out, "hard link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[tokio::test]
async fn reload_signals_only_a_verified_server() {
    let (mut server, pid_file) = with_a_domain();

    // A foreign process named by a pid file nobody holds.
    let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
    std::fs::write(&pid_file, format!("{}\n", sleeper.id())).unwrap();
    let out = server.cli(&["reload"], None);
    assert_refused(&out, "no process holds its lock");
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the foreign process was signalled"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    // Held and named by a live process that is not mairust: this test itself (SIGHUP
    // would end it).
    let held = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&pid_file)
        .unwrap();
    // SAFETY: flock on our own descriptor.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
    let out = server.cli(&["reload"], None);
    assert_refused(&out, "not this mairust binary");
    // Held by one process, naming another.
    let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
    std::fs::write(&pid_file, format!("{}\n", sleeper.id())).unwrap();
    let out = server.cli(&["reload"], None);
    assert_refused(
        &out,
        &format!("process {} holds its lock", std::process::id()),
    );
    assert!(sleeper.try_wait().unwrap().is_none());
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    drop(held);
    std::fs::remove_file(&pid_file).unwrap();

    // The real server is accepted.
    server.spawn();
    let out = server.cli(&["reload"], None);
    assert!(out.status.success(), "{}", output(&out));
    assert!(
        output(&out).contains(&format!(
            "configuration reloaded (process {})",
            server.pid()
        )),
        "{}",
        output(&out)
    );
}
