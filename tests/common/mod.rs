//! Test harness: runs the real `mairust` binary on loopback ports chosen by the OS, on
//! SQLite + fs by default, or on PostgreSQL + S3 when `MAIRUST_TEST_POSTGRES_URL` and
//! `MAIRUST_TEST_S3_ENDPOINT` are set (`.ci/run` sets both).
#![allow(dead_code)]

pub mod api;
pub mod dns;
pub mod hook_receiver;
pub mod http;
pub mod otlp;
pub mod raw;
pub mod sink;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mairust_entities::{mailbox_message, message};
use sea_orm::{
    ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryFilter,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_mairust");
pub const DOMAIN: &str = "example.test";
pub const PASSWORD: &str = "correct horse battery staple";

/// Where this test's data lives.
pub struct Backend {
    pub db_url: String,
    pub storage_yaml: String,
    /// PostgreSQL: (server URL without database, database name) to drop at the end.
    pg: Option<(String, String)>,
    pub s3: Option<S3Target>,
}

#[derive(Clone)]
pub struct S3Target {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
}

pub fn postgres_url() -> Option<String> {
    std::env::var("MAIRUST_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

pub fn s3_endpoint() -> Option<String> {
    std::env::var("MAIRUST_TEST_S3_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
}

/// `postgres://u@h:p/db` → (`postgres://u@h:p`, `db`).
fn split_pg(url: &str) -> (String, String) {
    let (base, db) = url.rsplit_once('/').expect("postgres URL with a database");
    (
        base.to_string(),
        db.split('?').next().unwrap_or("").to_string(),
    )
}

impl Backend {
    pub fn new(dir: &Path) -> Backend {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (db_url, pg) = match postgres_url() {
            Some(url) => {
                let (base, admin_db) = split_pg(&url);
                let name = format!("mairust_t_{}", &id[..16]);
                block_on(async {
                    let admin = Database::connect(format!("{base}/{admin_db}"))
                        .await
                        .expect("postgres");
                    admin
                        .execute_unprepared(&format!("CREATE DATABASE {name}"))
                        .await
                        .expect("create test database");
                    admin.close().await.ok();
                });
                (
                    format!("{base}/{name}"),
                    Some((format!("{base}/{admin_db}"), name)),
                )
            }
            None => (
                format!("sqlite://{}/mairust.db?mode=rwc", dir.display()),
                None,
            ),
        };
        let (storage_yaml, s3) = match s3_endpoint() {
            Some(endpoint) => {
                let bucket =
                    std::env::var("MAIRUST_TEST_S3_BUCKET").unwrap_or("mairust-test".into());
                let target = S3Target {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    prefix: format!("t-{}", &id[..16]),
                };
                (s3_yaml(&target), Some(target))
            }
            None => (
                format!(
                    "storage:\n  backend: fs\n  fs:\n    path: {}/objects\n",
                    dir.display()
                ),
                None,
            ),
        };
        let backend = Backend {
            db_url,
            storage_yaml,
            pg,
            s3,
        };
        backend.record_use();
        backend
    }

    /// Appends `postgres|sqlite s3|fs` to `CARGO_TARGET_TMPDIR/backends.txt`: `.ci/run`
    /// checks that its PostgreSQL + S3 pass used nothing else.
    fn record_use(&self) {
        let line = format!(
            "{} {}\n",
            if self.pg.is_some() {
                "postgres"
            } else {
                "sqlite"
            },
            if self.s3.is_some() { "s3" } else { "fs" }
        );
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("backends.txt");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("target tmp dir");
        // One short write on a file opened for append: lines of parallel tests stay whole.
        file.write_all(line.as_bytes()).expect("record the backend");
    }

    /// The same database and object store for another node; dropping it drops nothing.
    pub fn shared(&self) -> Backend {
        Backend {
            db_url: self.db_url.clone(),
            storage_yaml: self.storage_yaml.clone(),
            pg: None,
            s3: self.s3.clone(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// PostgreSQL only: refuse new connections and end the server's (a database outage).
    pub fn pg_block(&self, blocked: bool) {
        let (admin, name) = self.pg.clone().expect("postgres backend");
        block_on(async move {
            let db = Database::connect(admin).await.expect("postgres admin");
            db.execute_unprepared(&format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS {}",
                !blocked
            ))
            .await
            .unwrap();
            if blocked {
                db.execute_unprepared(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                ))
                .await
                .unwrap();
            }
            db.close().await.ok();
        });
    }
}

pub fn s3_yaml(t: &S3Target) -> String {
    format!(
        "storage:\n  backend: s3\n  s3:\n    bucket: {}\n    endpoint: {}\n    region: us-east-1\n    access_key_id: test\n    secret_access_key: test\n    allow_http: true\n    prefix: {}\n",
        t.bucket, t.endpoint, t.prefix
    )
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            block_on(async move {
                if let Ok(db) = Database::connect(admin).await {
                    let _ = db
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    db.close().await.ok();
                }
            });
        }
    }
}

/// Whether a test's backend (`what`, e.g. "PostgreSQL") is there. When it is not, the
/// test is skipped with a `skipped:` line, unless `MAIRUST_TEST_REQUIRE_BACKENDS=1`
/// (`.ci/run` sets it in the PostgreSQL + S3 pass): there a skip would hide that the
/// test never ran, so it fails instead.
pub fn backend_available(available: bool, what: &str) -> bool {
    if !available {
        assert!(
            std::env::var("MAIRUST_TEST_REQUIRE_BACKENDS").as_deref() != Ok("1"),
            "MAIRUST_TEST_REQUIRE_BACKENDS=1 but this test's backend is missing: {what}"
        );
        eprintln!("skipped: needs {what}");
    }
    available
}

/// Runs a future to completion on a private runtime (usable from sync code and from
/// inside a tokio test).
pub fn block_on<F: std::future::Future + Send>(fut: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fut)
        })
        .join()
        .unwrap()
    })
}

/// Knobs a test may turn; the rest of the configuration is fixed.
#[derive(Clone)]
pub struct Options {
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_bad_commands: u32,
    pub max_sessions_per_ip: usize,
    pub shutdown_timeout_seconds: u64,
    pub drain_timeout_seconds: u64,
    pub command_timeout_seconds: u64,
    pub allow_plaintext_auth: bool,
    /// Also run the implicit-TLS `submissions` listener.
    pub submissions: bool,
    pub users: Vec<String>,
    /// YAML appended to the configuration (`queue:` and `delivery:` sections).
    pub extra_yaml: String,
    pub audit_retention_days: u32,
    /// Log to `DIR/log/mairust.log` instead of standard output (the harness tails it).
    pub log_file: bool,
    /// YAML lines added under `smtp.limits:` (indented by the harness).
    pub limits_yaml: Vec<String>,
    /// YAML lines added under `smtp:` (indented by the harness).
    pub smtp_yaml: Vec<String>,
    /// `smtp.workers`: SMTP arbiters, each with an accept loop per listener.
    pub smtp_workers: usize,
    /// Environment variables of the server process (e.g. `FAILPOINTS`).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_message_size: 1024 * 1024,
            max_recipients: 50,
            max_bad_commands: 10,
            max_sessions_per_ip: 200,
            shutdown_timeout_seconds: 10,
            drain_timeout_seconds: 10,
            command_timeout_seconds: 30,
            allow_plaintext_auth: false,
            submissions: false,
            users: vec!["bob".into(), "alice".into(), "carol".into()],
            extra_yaml: String::new(),
            audit_retention_days: 180,
            log_file: false,
            limits_yaml: Vec::new(),
            smtp_yaml: Vec::new(),
            smtp_workers: 2,
            env: Vec::new(),
        }
    }
}

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

    /// Starts (or restarts) the server process on the same configuration and data.
    pub fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            .args(["--config", self.config_path.to_str().unwrap(), "serve"])
            .current_dir(self.dir.path())
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
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
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
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
        let mut child = Command::new(BIN)
            .args(["--config", self.config_path.to_str().unwrap(), "serve"])
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mairust serve");
        let deadline = Instant::now() + timeout;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "the server started instead of refusing:\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status, text)
    }

    /// SIGTERM, then waits for the graceful exit.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(60));
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

    pub async fn db(&self) -> DatabaseConnection {
        Database::connect(&self.backend.db_url)
            .await
            .expect("test db")
    }

    /// Stored messages whose Message-ID header is `message_id`.
    pub async fn messages_with_id(&self, message_id: &str) -> Vec<message::Model> {
        let db = self.db().await;
        let rows = message::Entity::find()
            .filter(message::Column::MessageId.eq(message_id))
            .all(&db)
            .await
            .unwrap();
        db.close().await.ok();
        rows
    }

    /// How many mailbox entries (recipients) a stored message has.
    pub async fn index_count(&self, id: &str) -> usize {
        let db = self.db().await;
        let n = mailbox_message::Entity::find()
            .filter(mailbox_message::Column::MessageId.eq(id))
            .all(&db)
            .await
            .unwrap()
            .len();
        db.close().await.ok();
        n
    }

    /// Messages in a local user's mailboxes, oldest first.
    pub async fn inbox(&self, user: &str) -> Vec<message::Model> {
        use sea_orm::QueryOrder;
        let db = self.db().await;
        let user = mairust_entities::user::Entity::find()
            .filter(mairust_entities::user::Column::Address.eq(Self::address(user)))
            .one(&db)
            .await
            .unwrap()
            .expect("user exists");
        let ids: Vec<String> = mailbox_message::Entity::find()
            .filter(mailbox_message::Column::UserId.eq(user.id))
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.message_id)
            .collect();
        let rows = message::Entity::find()
            .filter(message::Column::Id.is_in(ids))
            .order_by_asc(message::Column::Id)
            .all(&db)
            .await
            .unwrap();
        db.close().await.ok();
        rows
    }

    /// The stored body of a message, read through the server's own storage code.
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let config = mairust_actors_config(&self.config_path);
        let store = mairust_actors::storage::BodyStore::open(&config.storage).ok()?;
        store.get(key).await.ok().map(|b| b.to_vec())
    }

    /// A new admin API key, made with the CLI as an operator makes the first one.
    pub fn admin_key(&self) -> String {
        self.cli_ok(&["admin", "create-key", "--scope", "admin"], None)
            .trim()
            .to_string()
    }

    /// GET `path` (e.g. `/api/v1/audit`) with the API key `key`: the JSON answer.
    pub async fn get_json(&self, key: &str, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.http))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Keys of the stored objects under `prefix`.
    pub async fn object_keys(&self, prefix: &str) -> Vec<String> {
        let config = mairust_actors_config(&self.config_path);
        // A store directory not created yet holds nothing.
        let Ok(store) = mairust_actors::storage::BodyStore::open(&config.storage) else {
            return Vec::new();
        };
        store
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// Polls `/health/ready` until it answers `status` (true) or `timeout` passes.
    pub async fn wait_ready_status(&self, status: u16, timeout: Duration) -> bool {
        eventually(timeout, || async {
            self.http_get("/health/ready").await.0 == status
        })
        .await
    }

    /// The `/metrics` page as text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn http_get(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// Parses a test's config file with the server's own loader rules (types only).
pub fn mairust_actors_config(path: &Path) -> mairust_actors::config::Config {
    let text = std::fs::read_to_string(path).unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    serde_json::from_value(value).unwrap()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on (for fixed-port configurations and dead hops).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

pub fn config_yaml(dir: &Path, db_url: &str, storage: &str, o: &Options) -> String {
    format!(
        r#"server:
  hostname: mx.example.test
  pid_file: {dir}/mairust.pid
  shutdown:
    timeout_seconds: {shutdown}
    drain_timeout_seconds: {drain}
smtp:
  listeners:
    inbound:
      address: 127.0.0.1:0
    submission:
      address: 127.0.0.1:0
    submissions:
      address: 127.0.0.1:0
      enabled: {submissions}
  tls:
    cert_path: {dir}/tls/cert.pem
    key_path: {dir}/tls/key.pem
    self_signed: true
  allow_plaintext_auth: {plain}
  limits:
    max_message_size: {size}
    max_recipients: {rcpts}
    max_bad_commands: {bad}
    max_sessions_per_ip: {per_ip}
    command_timeout_seconds: {cmd_timeout}
{limits_extra}  workers: {smtp_workers}
{smtp_extra}
http:
  address: 127.0.0.1:0
database:
  url: {db_url}
  connect_timeout_seconds: 2
{storage}health:
  interval_seconds: 0.2
  probe_timeout_seconds: 1
logging:
  level: info
  format: json
{log_file}audit:
  path: {dir}/audit.log
  retention_days: {retention}
{extra}"#,
        retention = o.audit_retention_days,
        log_file = if o.log_file {
            format!("  file: {}/log/mairust.log\n", dir.display())
        } else {
            String::new()
        },
        extra = o.extra_yaml,
        limits_extra = o
            .limits_yaml
            .iter()
            .map(|l| format!("    {l}\n"))
            .collect::<String>(),
        smtp_extra = o
            .smtp_yaml
            .iter()
            .map(|l| format!("  {l}\n"))
            .collect::<String>(),
        dir = dir.display(),
        shutdown = o.shutdown_timeout_seconds,
        drain = o.drain_timeout_seconds,
        plain = o.allow_plaintext_auth,
        submissions = o.submissions,
        size = o.max_message_size,
        rcpts = o.max_recipients,
        bad = o.max_bad_commands,
        per_ip = o.max_sessions_per_ip,
        cmd_timeout = o.command_timeout_seconds,
        smtp_workers = o.smtp_workers,
    )
}

/// One message from a@remote.test to bob over the inbound listener; the reply to the
/// final dot.
pub async fn deliver_to_bob(server: &TestServer, message_id: &str) -> raw::RawReply {
    deliver_to(server, &TestServer::address("bob"), message_id).await
}

/// One message from a@remote.test to the local address `to` over the inbound listener;
/// the reply to the final dot.
pub async fn deliver_to(server: &TestServer, to: &str, message_id: &str) -> raw::RawReply {
    let (mut c, _) = raw::RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@remote.test>", 250).await;
    c.expect(&format!("RCPT TO:<{to}>"), 250).await;
    c.expect("DATA", 354).await;
    let body = message("a@remote.test", to, message_id, "hi");
    c.send(format!("{body}.\r\n").as_bytes()).await;
    c.reply().await.expect("reply to the data")
}

/// A small RFC 5322 message with a unique Message-ID.
pub fn message(from: &str, to: &str, message_id: &str, body: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: test {message_id}\r\nMessage-ID: <{message_id}>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// STARTTLS (or implicit TLS) and AUTH with a self-signed server certificate.
pub async fn tls_login(
    port: u16,
    implicit: bool,
    user: &str,
    password: &str,
) -> mail_send::Result<
    mail_send::SmtpClient<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>,
> {
    mail_send::SmtpClientBuilder::new("localhost".to_string(), port)
        .unwrap()
        .implicit_tls(implicit)
        .allow_invalid_certs()
        .credentials((user.to_string(), password.to_string()))
        .connect()
        .await
}

/// Standard base64, for SASL exchanges in raw tests.
pub fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A finished command's standard output and error, for assertion messages.
pub fn output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The command failed (exit 1) and said `needle`.
pub fn assert_refused(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", output(out));
    assert!(output(out).contains(needle), "{needle}: {}", output(out));
}
