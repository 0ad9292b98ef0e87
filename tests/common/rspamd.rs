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
    /// Taken by the first [`Rspamd::kill`]: its group is never signalled twice.
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Rspamd {
    /// Starts rspamd; `None` when it is not installed outside CI (`.ci/run` installs
    /// it, and there its absence fails the test).
    pub fn start() -> Option<Rspamd> {
        let found = Command::new("rspamd").arg("--version").output().is_ok();
        if !super::tool_available(found, "rspamd", "Debian package rspamd") {
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
        // The compiled expressions are kept between runs (the first start takes about a
        // minute); everything else an instance writes stays in its own directory.
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rspamd-hs-cache");
        std::fs::create_dir_all(&cache).unwrap();
        write(
            "options.inc",
            format!(
                "dns {{\n  nameserver = [\"127.0.0.1:9\"];\n  timeout = 0.5s;\n  retransmits = 1;\n}}\nhs_cache_dir = \"{}\";\nenable_test_patterns = true;\n",
                cache.display()
            ),
        );
        // No module that asks servers outside.
        for module in [
            "fuzzy_check",
            "rbl",
            "surbl",
            "dcc",
            "replies",
            "neural",
            "ratelimit",
        ] {
            write(&format!("{module}.conf"), "enabled = false;\n".into());
        }
        write(
            "logging.inc",
            "type = \"console\";\nlevel = \"error\";\n".into(),
        );
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        let var = |k: &str, v: &std::path::Path| format!("{k}={}", v.display());
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new("rspamd")
            .args(["-f", "-i", "-c", "/etc/rspamd/rspamd.conf"])
            .args(["--var", &var("LOCAL_CONFDIR", dir.path())])
            .args(["--var", &var("DBDIR", &db)])
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
        let mut rspamd = Rspamd {
            addr,
            child: Some(child),
            _dir: dir,
        };
        // The first start compiles its suffix lists and expressions: up to a minute.
        let deadline = Instant::now() + Duration::from_secs(180);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = rspamd.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "rspamd exited at start ({status}): run it by hand with this configuration to see why"
                );
            }
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
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = -(child.id() as i32);
        // SAFETY: signals to the process group this harness started.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; the group's leader is not reaped yet, so its id is ours.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        self.kill();
    }
}
