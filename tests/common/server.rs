//! [`TestServer`]: the real `mairust` binary on its own configuration and data,
//! started and stopped as a process, its log lines collected, its CLI run.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{BIN, Backend, DOMAIN, Options, PASSWORD, config_yaml};

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub options: Options,
    pub config_path: PathBuf,
    child: Option<Child>,
    pub inbound: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub http: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::new(dir.path());
        Self::start_on(dir, backend, options, None)
    }

    /// Starts with another storage section (outage tests run their own S3 server).
    pub fn start_on(
        dir: tempfile::TempDir,
        backend: Backend,
        options: Options,
        storage_yaml: Option<String>,
    ) -> TestServer {
        let mut server = Self::configure(dir, backend, options.clone(), storage_yaml);
        server.cli_ok(&["domain", "add", DOMAIN], None);
        for user in &options.users {
            server.cli_ok(
                &[
                    "user",
                    "add",
                    &format!("{user}@{DOMAIN}"),
                    "--password-stdin",
                ],
                Some(PASSWORD),
            );
        }
        server.spawn();
        server
    }

    /// A configuration on a fresh database and object store, with no accounts and no
    /// process: for restore targets and CLI tests.
    pub fn prepare(options: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::new(dir.path());
        Self::configure(dir, backend, options, None)
    }

    /// [`TestServer::prepare`] with another storage section.
    pub fn prepare_on(options: Options, storage_yaml: String) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::new(dir.path());
        Self::configure(dir, backend, options, Some(storage_yaml))
    }

    /// Another node on this server's database and object store (accounts exist).
    pub fn start_node(&self, options: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = Self::configure(dir, self.backend.shared(), options, None);
        node.spawn();
        node
    }

    /// Writes the configuration; starts nothing.
    fn configure(
        dir: tempfile::TempDir,
        backend: Backend,
        options: Options,
        storage_yaml: Option<String>,
    ) -> TestServer {
        let config_path = dir.path().join("config.yaml");
        let storage = storage_yaml.unwrap_or_else(|| backend.storage_yaml.clone());
        std::fs::write(
            &config_path,
            config_yaml(dir.path(), &backend.db_url, &storage, &options),
        )
        .unwrap();
        TestServer {
            dir,
            backend,
            options: options.clone(),
            config_path,
            child: None,
            inbound: "0.0.0.0:0".parse().unwrap(),
            submission: "0.0.0.0:0".parse().unwrap(),
            submissions: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
            logs: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Rewrites the configuration with new options (takes effect at the next spawn).
    pub fn reconfigure(&mut self, options: Options) {
        std::fs::write(
            &self.config_path,
            config_yaml(
                self.dir.path(),
                &self.backend.db_url,
                &self.backend.storage_yaml,
                &options,
            ),
        )
        .unwrap();
        self.options = options;
    }

    /// `mairust --config CONFIG ARGS…` in the server's directory, its standard output
    /// piped.
    fn mairust(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::piped());
        // The AWS credential chain of the machine running the tests must not reach a
        // test server (only `Options::env` gives it one).
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("AWS_")) {
                command.env_remove(name);
            }
        }
        command
    }

    /// Starts (or restarts) the server process on the same configuration and data.
    pub fn spawn(&mut self) {
        let mut child = self
            .mairust(&["serve"])
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mairust serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<serde_json::Value>();
        let logs = self.logs.clone();
        let keep = move |line: String| {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(v);
            }
            logs.lock().unwrap().push(line);
        };
        if self.options.log_file {
            // One follower per server: such servers are started once.
            assert!(self.logs.lock().unwrap().is_empty(), "log_file: spawn once");
            let path = self.dir.path().join("log/mairust.log");
            let owner = Arc::downgrade(&self.logs);
            std::thread::spawn(move || tail(&path, owner, keep));
        } else {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    keep(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match rx.recv_timeout(left) {
                Ok(e) => e,
                Err(_) => {
                    let status = child.try_wait();
                    panic!(
                        "server did not become ready ({status:?}); log:\n{}",
                        self.logs.lock().unwrap().join("\n")
                    );
                }
            };
            match (event["event"].as_str(), event["listener"].as_str()) {
                (Some("listening"), Some(name)) => {
                    let addr: SocketAddr = event["addr"].as_str().unwrap().parse().unwrap();
                    match name {
                        "inbound" => self.inbound = addr,
                        "submission" => self.submission = addr,
                        "submissions" => self.submissions = addr,
                        "http" => self.http = addr,
                        _ => {}
                    }
                }
                (Some("ready"), _) => break,
                _ => {}
            }
        }
        self.child = Some(child);
    }

    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .mairust(args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
            pipe.write_all(b"\n").unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "mairust {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The server's peak resident memory so far (VmHWM) and now (VmRSS), in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .expect("memory field")
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server on its configuration expecting it to refuse to start: its exit
    /// status and everything it printed (stdout and stderr).
    pub fn spawn_refused(&self, timeout: Duration) -> (std::process::ExitStatus, String) {
        assert!(self.child.is_none(), "the server is running");
        let mut child = self
            .mairust(&["serve"])
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mairust serve");
        let deadline = Instant::now() + timeout;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "the server started instead of refusing:\n{}",
                    super::output(&output)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        (output.status, super::output(&output))
    }

    /// SIGTERM, then waits for the graceful exit.
    pub fn stop(&mut self) {
        self.stop_within(Duration::from_secs(60));
    }

    /// SIGTERM, then waits for the graceful exit; panics unless it comes within
    /// `timeout`.
    pub fn stop_within(&mut self, timeout: Duration) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(timeout);
        assert!(status.success(), "graceful stop failed: {status}");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn address(user: &str) -> String {
        format!("{user}@{DOMAIN}")
    }

    /// The server's log lines so far, parsed (the tests run it with JSON logs).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Follows a log file, until the server object is dropped.
fn tail(path: &Path, owner: std::sync::Weak<Mutex<Vec<String>>>, mut keep: impl FnMut(String)) {
    let mut offset = 0usize;
    while owner.strong_count() > 0 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.len() > offset {
            // Whole lines only.
            let end = text[offset..]
                .rfind('\n')
                .map_or(offset, |i| offset + i + 1);
            for line in text[offset..end].lines() {
                keep(line.to_string());
            }
            offset = end;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
