//! A real rspamd (Debian package `rspamd`) for the tests: its own configuration
//! directory beside the packaged one (`local.d` overrides: its workers on free loopback
//! ports, DNS to a port nobody answers, so no network rule reaches out), started in
//! the foreground and killed when dropped. Its compiled maps are cached under the
//! target directory, so only the first start of a run pays for them.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Rspamd {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Rspamd {
    /// Starts rspamd; `None` when it is not installed outside CI (`.ci/run` installs
    /// it, and there its absence fails the test).
    pub fn start() -> Option<Rspamd> {
        if Command::new("rspamd").arg("--version").output().is_err() {
            assert!(
                std::env::var("CI").is_err(),
                "rspamd is needed in CI (Debian package rspamd)"
            );
            eprintln!("rspamd not installed: test not run (apt-get install rspamd)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local.d");
        std::fs::create_dir_all(&local).unwrap();
        let port = super::free_port();
        let controller = super::free_port();
        let proxy = super::free_port();
        let write = |name: &str, text: String| std::fs::write(local.join(name), text).unwrap();
        write(
            "worker-normal.inc",
            format!("bind_socket = \"127.0.0.1:{port}\";\ncount = 1;\n"),
        );
        write(
            "worker-controller.inc",
            format!("bind_socket = \"127.0.0.1:{controller}\";\ncount = 1;\n"),
        );
        write(
            "worker-proxy.inc",
            format!("bind_socket = \"127.0.0.1:{proxy}\";\ncount = 1;\nmilter = no;\n"),
        );
        write(
            "options.inc",
            "dns {\n  nameserver = [\"127.0.0.1:9\"];\n  timeout = 0.5s;\n  retransmits = 1;\n}\n"
                .into(),
        );
        write(
            "logging.inc",
            "type = \"console\";\nlevel = \"error\";\n".into(),
        );
        // The compiled regular expressions and the like, kept between runs.
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rspamd-cache");
        std::fs::create_dir_all(&cache).unwrap();
        let var = |k: &str, v: &std::path::Path| format!("{k}={}", v.display());
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new("rspamd")
            .args(["-f", "-i", "-c", "/etc/rspamd/rspamd.conf"])
            .args(["--var", &var("LOCAL_CONFDIR", dir.path())])
            .args(["--var", &var("DBDIR", &cache)])
            .args(["--var", &var("RUNDIR", &run)])
            .args(["--var", &var("LOGDIR", dir.path())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: the workers it forks are stopped with it.
            .process_group(0)
            .spawn()
            .expect("start rspamd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let rspamd = Rspamd {
            addr,
            child,
            _dir: dir,
        };
        // The first start compiles its suffix lists and expressions: up to a minute.
        let deadline = Instant::now() + Duration::from_secs(180);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rspamd did not listen within 180 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(rspamd)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and its workers now (a dead scanner): SIGTERM to the group, SIGKILL
    /// after 5 s.
    pub fn kill(&mut self) {
        let group = -(self.child.id() as i32);
        // SAFETY: signals to the process group this harness started.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        self.kill();
    }
}
