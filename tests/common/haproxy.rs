//! A real HAProxy (Debian package `haproxy`) in TCP mode for the tests: frontends on
//! free loopback ports, each forwarding to backends with a PROXY header (v1 or v2),
//! connecting from a chosen source address so the nodes can trust exactly it. Run in
//! the foreground and killed when dropped.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Frontend {
    /// The PROXY header version its servers get: 1 (`send-proxy`) or 2 (`send-proxy-v2`).
    pub version: u8,
    pub backends: Vec<SocketAddr>,
}

pub struct Haproxy {
    /// One address per frontend, in the order given.
    pub frontends: Vec<SocketAddr>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy; `None` when it is not installed outside CI (`.ci/run` installs
    /// it, and there its absence fails the test). HAProxy connects to the backends from
    /// `source`.
    pub fn start(source: &str, frontends: &[Frontend]) -> Option<Haproxy> {
        let found = Command::new("haproxy").arg("-v").output().is_ok();
        if !super::tool_available(found, "haproxy", "Debian package haproxy") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = String::from(
            "global\n  maxconn 200\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n",
        );
        let mut addrs = Vec::new();
        for (i, f) in frontends.iter().enumerate() {
            let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
            addrs.push(addr);
            let send = if f.version == 1 {
                "send-proxy"
            } else {
                "send-proxy-v2"
            };
            cfg.push_str(&format!(
                "\nfrontend f{i}\n  bind {addr}\n  default_backend b{i}\n\nbackend b{i}\n  balance roundrobin\n"
            ));
            for (j, b) in f.backends.iter().enumerate() {
                cfg.push_str(&format!("  server s{j} {b} {send} source {source}\n"));
            }
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c refused the configuration:\n{cfg}\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = super::die_with_test(&mut Command::new("haproxy"))
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let mut haproxy = Haproxy {
            frontends: addrs,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in haproxy.frontends.clone() {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = haproxy.child.try_wait() {
                    panic!("haproxy exited at start ({status})");
                }
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not listen within 20 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(haproxy)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
