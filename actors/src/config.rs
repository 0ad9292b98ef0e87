//! The configuration model (SPEC O15). Loading (search path, `env:` values) lives in the
//! binary; this module holds the types, their defaults and [`Config::validate`].
//!
//! Every struct denies unknown fields so a typo is an error that names the key, not a
//! silently ignored setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A configuration value that is present but wrong: `key` is the dotted path.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
    #[serde(default)]
    pub hook_policy: HookPolicyConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Name used in the greeting, EHLO reply and Received headers.
    pub hostname: String,
    pub shutdown: ShutdownConfig,
    /// `serve` writes its process id here (removed at exit); `mairust reload` reads it.
    pub pid_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            shutdown: ShutdownConfig::default(),
            pid_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long running SMTP sessions may go on after SIGTERM before they get 421.
    pub timeout_seconds: u64,
    /// How long queue workers may finish in-flight deliveries after SIGTERM.
    pub drain_timeout_seconds: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout_seconds: 60,
            drain_timeout_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub listeners: Listeners,
    pub tls: Option<TlsConfig>,
    /// Offer AUTH on connections without TLS. Off by default: passwords in clear.
    pub allow_plaintext_auth: bool,
    /// Offer AUTH on the `inbound` (MX) listener too. Off by default: port 25 is where
    /// password guessers knock, and users submit on `submission`/`submissions`.
    pub auth_on_inbound: bool,
    /// Deprecated spelling of `submission.enforce_envelope_sender`, still read so one
    /// file serves nodes on both sides of the rename during a rolling upgrade.
    pub require_sender_match: Option<bool>,
    pub submission: SubmissionConfig,
    pub limits: SmtpLimits,
    /// Threads (actix arbiters) that run SMTP sessions; 0 = one per CPU minus one.
    pub workers: usize,
}

/// What an authenticated client (SMTP AUTH) may put in its mail (SPEC M3, S5): strict
/// by default, each check can be turned off for installations that need it (a gateway
/// relaying bounces, an application sending for many addresses). `POST /send` always
/// sends as an existing user and builds the From: header itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Accept `MAIL FROM:<>`. Off: the null sender is for the server's own bounces
    /// (RFC 5321 §4.5.5); from a user it only hides who sent the message.
    pub allow_null_sender: bool,
    /// MAIL FROM must be an address the account may use (its own). `None` when the key
    /// is absent: then the deprecated `smtp.require_sender_match`, else true; read it
    /// through [`SmtpConfig::enforce_envelope_sender`].
    pub enforce_envelope_sender: Option<bool>,
    /// The message must have exactly one From: header and every address in it must be
    /// one the account may use (checked at the end of DATA).
    pub enforce_from_header: bool,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        SubmissionConfig {
            allow_null_sender: false,
            enforce_envelope_sender: None,
            enforce_from_header: true,
        }
    }
}

impl SmtpConfig {
    /// `smtp.submission.enforce_envelope_sender`, else the deprecated
    /// `smtp.require_sender_match`, else true.
    pub fn enforce_envelope_sender(&self) -> bool {
        self.submission
            .enforce_envelope_sender
            .or(self.require_sender_match)
            .unwrap_or(true)
    }

    /// Keys that still work but should be renamed, with their new name.
    pub fn deprecated_keys(&self) -> Vec<(&'static str, &'static str)> {
        let mut keys = Vec::new();
        if self.require_sender_match.is_some() {
            keys.push((
                "smtp.require_sender_match",
                "smtp.submission.enforce_envelope_sender",
            ));
        }
        keys
    }

    fn validate_submission(&self) -> Result<(), ConfigError> {
        if let (Some(old), Some(new)) = (
            self.require_sender_match,
            self.submission.enforce_envelope_sender,
        ) && old != new
        {
            return Err(ConfigError::new(
                "smtp.require_sender_match",
                format!(
                    "deprecated spelling of smtp.submission.enforce_envelope_sender, and the two disagree ({old} and {new}): remove smtp.require_sender_match"
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    pub inbound: ListenerConfig,
    pub submission: ListenerConfig,
    pub submissions: ListenerConfig,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            inbound: ListenerConfig::new("127.0.0.1:2525", true),
            submission: ListenerConfig::new("127.0.0.1:2587", true),
            submissions: ListenerConfig::new("127.0.0.1:2465", false),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl ListenerConfig {
    fn new(address: &str, enabled: bool) -> Self {
        ListenerConfig {
            address: address.into(),
            enabled,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Create a self-signed certificate at the paths when they do not exist (development).
    #[serde(default)]
    pub self_signed: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpLimits {
    /// Bytes; larger messages get 552 5.3.4. Advertised in EHLO SIZE.
    pub max_message_size: usize,
    /// More RCPTs in one transaction get 452 4.5.3.
    pub max_recipients: usize,
    /// Longest command or DATA line, CRLF included.
    pub max_line_length: usize,
    /// Idle time allowed while waiting for a command (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout_seconds: u64,
    /// Idle time allowed between DATA chunks (RFC 5321 §4.5.3.2: 3 minutes).
    pub data_timeout_seconds: u64,
    /// Syntax errors and refused commands before the session is closed with 421.
    pub max_bad_commands: u32,
    /// Concurrent sessions over all listeners; more get 421 4.7.0.
    pub max_sessions: usize,
    /// Concurrent sessions from one client address; more get 421 4.7.0. IPv6 clients
    /// are counted by their `ipv6_prefix_length` network.
    pub max_sessions_per_ip: usize,
    /// IPv6 addresses count as one client per network of this prefix length (a single
    /// customer usually holds a whole /64); IPv4 addresses count one by one.
    pub ipv6_prefix_length: u8,
    /// A reply not taken by the client within this time ends the session (a client
    /// that pipelines commands and never reads must not hold its slot).
    pub write_timeout_seconds: u64,
    /// After the first `data_timeout_seconds` of DATA, the body must arrive at least
    /// this fast on average, or the session ends with 421 4.4.2 (no trickling); 0: no
    /// minimum.
    pub data_min_rate_bytes_per_second: u64,
    /// No session lasts longer than this, however busy (421 4.4.2 at the next read).
    pub max_session_seconds: u64,
    /// DATA bytes one session keeps in memory; beyond that the body is spooled to a
    /// temporary file in `spool_dir`.
    pub data_memory_bytes: usize,
    /// DATA bytes all sessions together keep in memory: half for bodies still arriving
    /// (a session that finds none left spools to disk), half for finished bodies on
    /// their way to storage (one that finds no room within `data_timeout_seconds` gets
    /// 451 4.3.2).
    pub max_inflight_data_bytes: usize,
    /// Where large bodies are spooled (unnamed files, gone when closed); the system's
    /// temporary directory when absent.
    pub spool_dir: Option<PathBuf>,
    /// Spooled bytes of all sessions together: a body that would pass it is discarded
    /// as it arrives and refused with 452 4.3.1 (no disk filling by withheld dots).
    pub max_spool_bytes: u64,
    /// Spooled bytes of one client address (IPv6: its prefix), so one client cannot
    /// take the whole spool from the others.
    pub max_spool_bytes_per_client: u64,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 4096,
            command_timeout_seconds: 300,
            data_timeout_seconds: 180,
            max_bad_commands: 20,
            max_sessions: 10_000,
            max_sessions_per_ip: 100,
            ipv6_prefix_length: 64,
            write_timeout_seconds: 60,
            data_min_rate_bytes_per_second: 500,
            max_session_seconds: 1800,
            data_memory_bytes: 256 * 1024,
            max_inflight_data_bytes: 256 * 1024 * 1024,
            spool_dir: None,
            max_spool_bytes: 2 * 1024 * 1024 * 1024,
            max_spool_bytes_per_client: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    pub address: String,
    pub workers: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            address: "127.0.0.1:8080".into(),
            workers: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` or `postgres://user@host:port/db`.
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Also bounds how long a query waits for a pool connection, so a dead database
    /// turns into a quick tempfail rather than a hang.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
}

fn default_max_connections() -> u32 {
    16
}

fn default_connect_timeout() -> u64 {
    3
}

impl DatabaseConfig {
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Fs,
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    pub fs: Option<FsStorageConfig>,
    pub s3: Option<S3StorageConfig>,
    /// Stored message bytes at which new mail gets 452 4.3.1; 0 for no limit.
    #[serde(default)]
    pub limit_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsStorageConfig {
    pub path: PathBuf,
    /// fsync bodies before 250 (SPEC M4). Only for throwaway test setups turn it off.
    #[serde(default = "yes")]
    pub fsync: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3StorageConfig {
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// For S3-compatible stores (MinIO, moto ...); AWS when absent.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    /// Key prefix inside the bucket, so several installations can share one.
    #[serde(default)]
    pub prefix: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between dependency probes.
    pub interval_seconds: f64,
    /// A probe slower than this counts as a failure.
    pub probe_timeout_seconds: f64,
    /// Consecutive failed probes before a dependency is marked down (SMTP tempfails).
    /// A failure seen by a caller only triggers probes at once; it never marks down.
    pub failures_before_down: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_seconds: 5.0,
            probe_timeout_seconds: 2.0,
            failures_before_down: 2,
        }
    }
}

impl HealthConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_seconds)
    }

    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.probe_timeout_seconds)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// trace, debug, info, warn or error (or a tracing filter directive).
    pub level: String,
    pub format: LogFormat,
    /// Log to this file instead of standard output, rotated by size.
    pub file: Option<PathBuf>,
    pub rotation: RotationConfig,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
            file: None,
            rotation: RotationConfig::default(),
        }
    }
}

/// Size-based rotation of `logging.file`: `mairust.log` → `mairust.log.1(.gz)` → ...
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Rotate once the file passes this size (fractions allowed).
    pub max_size_mb: f64,
    /// Rotated files kept; older ones are deleted.
    pub max_files: usize,
    /// gzip rotated files.
    pub compress: bool,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            max_size_mb: 100.0,
            max_files: 10,
            compress: true,
        }
    }
}

/// OpenTelemetry (SPEC O2).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub tracing: TracingConfig,
    pub metrics: MetricsConfig,
}

/// Prometheus metrics (SPEC O1) at `GET /metrics` on the HTTP address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// false: no /metrics and nothing counted on the SMTP path.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TraceExporter {
    /// OTLP over HTTP with protobuf bodies (a collector's port 4318, Jaeger, Tempo).
    #[default]
    Otlp,
}

/// One trace per SMTP transaction and per API request, exported over OTLP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    pub enabled: bool,
    pub exporter: TraceExporter,
    /// The collector's OTLP/HTTP address; `/v1/traces` is added unless given.
    pub endpoint: String,
    /// Share of new traces kept, 0 to 1 (a `traceparent` that is sampled is followed).
    pub sample_rate: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: false,
            exporter: TraceExporter::Otlp,
            endpoint: "http://127.0.0.1:4318".into(),
            sample_rate: 1.0,
        }
    }
}

impl TracingConfig {
    /// The full OTLP/HTTP traces URL.
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }
}

/// The audit log (SPEC O5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The append-only JSON-lines file; without it events go to the database only.
    pub path: Option<PathBuf>,
    /// Database entries older than this are pruned (the file is never rewritten).
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            retention_days: 180,
        }
    }
}

/// Purging soft-deleted messages (SPEC M7). Every node runs the purge; the database
/// hands each batch to one node only (see `retention`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Mailbox entries deleted (through the API) longer ago than this are purged, and
    /// with them the messages and bodies nothing else refers to. 0: never purged.
    pub deleted_messages_days: u32,
    /// How often each node looks for entries to purge (and at start).
    pub purge_interval_seconds: f64,
    /// Entries purged per transaction: a large backlog goes in many short
    /// transactions, never one that holds the database.
    pub purge_batch_size: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            deleted_messages_days: 30,
            purge_interval_seconds: 3600.0,
            purge_batch_size: 500,
        }
    }
}

impl RetentionConfig {
    pub fn purge_interval(&self) -> Duration {
        Duration::from_secs_f64(self.purge_interval_seconds)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.deleted_messages_days > 36_500 {
            return Err(ConfigError::new(
                "retention.deleted_messages_days",
                "must be at most 36500 (100 years); 0 keeps deleted messages for ever",
            ));
        }
        let interval = self.purge_interval_seconds;
        if !(interval.is_finite() && interval > 0.0 && interval <= 86_400.0) {
            return Err(ConfigError::new(
                "retention.purge_interval_seconds",
                "must be greater than 0 and at most 86400 (one day)",
            ));
        }
        if !(1..=10_000).contains(&self.purge_batch_size) {
            return Err(ConfigError::new(
                "retention.purge_batch_size",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }
}

/// Password checks (SMTP AUTH, and password hashing in the API): how many run at once
/// on this node, and how failures are throttled per client address and per account.
/// Counters live in memory on each node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Password verifications (argon2id, ~19 MiB and ~20 ms of CPU each) running at
    /// once. 0 = one per CPU.
    pub max_concurrent_verifications: usize,
    /// Attempts that may wait (up to 2 s) for a verification slot; more get 454 4.7.0
    /// (SMTP) or 503 (API) at once. 0 = eight per slot.
    pub max_queued_verifications: usize,
    /// Failures from one client address (IPv6: its `smtp.limits.ipv6_prefix_length`
    /// network) within `failure_window_seconds` before it is locked out.
    pub max_failures_per_address: u32,
    /// Failures for one account, from anywhere, before the account is locked out for
    /// addresses that have not logged into it successfully in the last 30 days.
    pub max_failures_per_account: u32,
    /// How long failures are remembered, and the period of the audit summaries.
    pub failure_window_seconds: u64,
    /// How long a locked-out address or account gets 454 4.7.0 without a check.
    pub lockout_seconds: u64,
    /// The answer to a failed attempt is delayed by this, doubled with each further
    /// failure of the address in the window, up to `max_failure_delay_ms`.
    pub failure_delay_ms: u64,
    pub max_failure_delay_ms: u64,
    /// Failures after an address's first are audited as one `auth.login_failures`
    /// summary entry per address and period of this length.
    pub audit_summary_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_concurrent_verifications: 0,
            max_queued_verifications: 0,
            max_failures_per_address: 10,
            max_failures_per_account: 30,
            failure_window_seconds: 900,
            lockout_seconds: 900,
            failure_delay_ms: 250,
            max_failure_delay_ms: 5000,
            audit_summary_seconds: 60,
        }
    }
}

impl AuthConfig {
    /// `max_concurrent_verifications` with 0 resolved to the CPU count.
    pub fn verification_slots(&self) -> usize {
        match self.max_concurrent_verifications {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `max_queued_verifications` with 0 resolved to eight per slot.
    pub fn queued_verifications(&self) -> usize {
        match self.max_queued_verifications {
            0 => 8 * self.verification_slots(),
            n => n,
        }
    }
}

/// When a hook is called (SPEC M9).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// After DATA, before 250: may allow, reject (550 5.7.1), tempfail (451 4.7.1) or tag.
    PreReceive,
    /// After the message is stored; the answer is not awaited.
    PostReceive,
    /// Before a message with remote recipients is queued: may allow, reject or tempfail.
    PreSend,
}

/// What happens to the message when a hook cannot give an answer.
#[derive(
    Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HookFallback {
    #[default]
    Allow,
    Reject,
    Tempfail,
}

/// An HTTP hook (SPEC M9).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Names the hook in logs, metrics and the signature.
    pub id: String,
    pub event: HookEvent,
    pub url: String,
    /// HMAC-SHA256 key for `X-MaiRust-Signature`.
    pub secret: String,
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub on_timeout: HookFallback,
    /// Connection errors, non-2xx answers and unreadable answers.
    #[serde(default)]
    pub on_error: HookFallback,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker skips the hook before one trial call.
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_seconds: f64,
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl HookConfig {
    /// Checks one hook; the error names the field. Used for config.yaml and the API.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let id_ok = (1..=64).contains(&self.id.len())
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !id_ok {
            return Err(("id", "1 to 64 letters, digits, '-', '_' or '.'"));
        }
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"));
        if !rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace)) {
            return Err(("url", "must be an http:// or https:// URL"));
        }
        if self.secret.len() < 16 {
            return Err(("secret", "must be at least 16 characters"));
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err(("timeout_ms", "must be between 1 and 600000"));
        }
        if self.breaker_failures == 0 {
            return Err(("breaker_failures", "must be greater than 0"));
        }
        if !(self.breaker_cooldown_seconds.is_finite() && self.breaker_cooldown_seconds > 0.0) {
            return Err(("breaker_cooldown_seconds", "must be greater than 0"));
        }
        Ok(())
    }
}

/// Where every hook (config.yaml's and the API's) may connect, and how much of its
/// answer is read. A hook is an HTTP request the server makes for whoever holds an admin
/// key, so by default it reaches public addresses only: not the server's own loopback
/// services, the cloud metadata address (169.254.169.254) or the private network behind
/// it. The address checked is the one connected to, after DNS resolution.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookPolicyConfig {
    /// Networks hooks may reach although they are not public (loopback, private,
    /// link-local, unique-local, CGNAT, documentation, benchmarking, IETF protocol
    /// assignments, local-use NAT64, discard-only, multicast, reserved: see
    /// `hooks::AddressRange`): `127.0.0.1/32` for a filter on this host, `10.20.0.0/16`
    /// for a hook service on the internal network (a bare address means that address
    /// alone). Public addresses are allowed too unless `only_allowed_networks`.
    pub allowed_networks: Vec<String>,
    /// Hooks may reach `allowed_networks` only, public addresses included: an egress
    /// allow-list for installations whose hook services live at known addresses.
    pub only_allowed_networks: bool,
    /// Longest hook answer read, in bytes; a longer one is an error (`on_error`), so a
    /// hook cannot make the server buffer without end.
    pub max_response_bytes: usize,
}

impl Default for HookPolicyConfig {
    fn default() -> Self {
        HookPolicyConfig {
            allowed_networks: Vec::new(),
            only_allowed_networks: false,
            max_response_bytes: 64 * 1024,
        }
    }
}

/// Largest `hook_policy.max_response_bytes`: hook answers are a few hundred bytes.
pub const MAX_HOOK_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

impl HookPolicyConfig {
    /// `allowed_networks` parsed; the error names the entry (`hook_policy.allowed_networks[1]`).
    pub fn networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        parse_networks("hook_policy.allowed_networks", &self.allowed_networks)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.networks()?;
        if !(1..=MAX_HOOK_RESPONSE_BYTES).contains(&self.max_response_bytes) {
            return Err(ConfigError::new(
                "hook_policy.max_response_bytes",
                format!("must be between 1 and {MAX_HOOK_RESPONSE_BYTES}"),
            ));
        }
        Ok(())
    }
}

/// Networks (`10.20.0.0/16`) or single addresses (`192.0.2.7`, a /32 or /128), as
/// written under `key`; the error names the bad entry (`key[1]`).
pub fn parse_networks(key: &str, entries: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    ConfigError::new(
                        format!("{key}[{i}]"),
                        format!("`{s}` is not a network like 10.20.0.0/16 or an IP address"),
                    )
                })
        })
        .collect()
}

fn default_hook_timeout_ms() -> u64 {
    2000
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_cooldown() -> f64 {
    30.0
}

/// The REST API (SPEC A1–A6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Failed authentications allowed per client address and minute; more get 429
    /// (a valid key is served all the same).
    pub auth_failures_per_minute: u32,
    /// Reverse proxies (addresses or networks) whose forwarding header names the client:
    /// behind a proxy every request comes from the proxy's address, so without this one
    /// client's failures would lock out everyone and the audit log would name the proxy.
    /// The header of any other peer is ignored (a client could write anything in it).
    pub trusted_proxies: Vec<String>,
    /// Which header a trusted proxy sets. One, not both: a client can send the other
    /// one, and a proxy that writes one passes the other through untouched.
    pub forwarded_header: ForwardedHeader,
    pub cors: CorsConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            auth_failures_per_minute: 10,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            cors: CorsConfig::default(),
        }
    }
}

impl ApiConfig {
    /// `trusted_proxies` parsed; the error names the entry (`api.trusted_proxies[0]`).
    pub fn trusted_proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        parse_networks("api.trusted_proxies", &self.trusted_proxies)
    }
}

/// The header a trusted proxy names the client in (`api.forwarded_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most balancers).
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// Browsers may call the API from these origins (an Admin UI); none by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// `https://admin.example.org` (scheme, host, optional port; no path, no `*`).
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer.
    pub max_age_seconds: u32,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            max_age_seconds: 3600,
        }
    }
}

/// The outbound queue (SPEC M6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// QueueWorker actors on this node; 0 = this node delivers nothing (it still queues).
    pub workers: usize,
    /// Entries one worker claims at a time.
    pub batch_size: usize,
    /// How often an idle worker looks for due entries (other nodes' mail, retries).
    pub poll_interval_seconds: f64,
    /// How long a claim holds; a dead node's entries return after it. Renewed while the
    /// worker is still delivering.
    pub lease_seconds: f64,
    /// After this long in the queue, pending recipients are bounced.
    pub max_age_seconds: f64,
    /// Message bytes one worker loads at once: bodies are loaded per destination in
    /// slices of at most this size (one larger message alone); bodies later destinations
    /// of the batch need too are kept up to this size as well (about twice in all).
    pub max_batch_bytes: u64,
    pub retry: RetryConfig,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            workers: 4,
            batch_size: 64,
            poll_interval_seconds: 1.0,
            lease_seconds: 300.0,
            max_age_seconds: 5.0 * 86_400.0,
            max_batch_bytes: 64 * 1024 * 1024,
            retry: RetryConfig::default(),
        }
    }
}

/// Delay before retry n (n = 1, 2 ...): `initial × factor^(n-1)`, at most `max`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub initial_seconds: f64,
    pub factor: f64,
    pub max_seconds: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_seconds: 300.0,
            factor: 2.0,
            max_seconds: 4.0 * 3600.0,
        }
    }
}

impl RetryConfig {
    /// The wait after the `attempts`-th failed attempt (1-based).
    pub fn delay(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let secs = (self.initial_seconds * self.factor.powi(exponent)).min(self.max_seconds);
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// STARTTLS on outbound connections.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// Use STARTTLS when the server offers it, without checking its certificate (the
    /// common practice between MTAs: RFC 7435), plain otherwise.
    #[default]
    Opportunistic,
    /// Never start TLS.
    Disabled,
}

/// How outbound mail reaches other servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Fixed next hops by recipient domain (`example.org: mx.example.org:25`), before
    /// the smarthost and MX lookup.
    pub routes: BTreeMap<String, String>,
    /// All other mail goes to this `host:port` instead of the domain's MX.
    pub smarthost: Option<String>,
    /// EHLO name; `server.hostname` when absent.
    pub helo_name: Option<String>,
    /// Port used for hosts found by MX lookup.
    pub mx_port: u16,
    pub connect_timeout_seconds: f64,
    /// Per command, and for the whole DATA transfer.
    pub command_timeout_seconds: f64,
    pub tls: OutboundTls,
    /// Messages sent over one connection before it is closed and a new one opened.
    pub max_messages_per_connection: usize,
    pub dns: DnsConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            routes: BTreeMap::new(),
            smarthost: None,
            helo_name: None,
            mx_port: 25,
            connect_timeout_seconds: 30.0,
            command_timeout_seconds: 300.0,
            tls: OutboundTls::Opportunistic,
            max_messages_per_connection: 100,
            dns: DnsConfig::default(),
        }
    }
}

/// Name servers for MX lookups; the system's (`/etc/resolv.conf`) when empty.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// `IP` or `IP:port` entries.
    pub nameservers: Vec<String>,
}

impl DnsConfig {
    pub fn nameserver_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.nameservers
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        ConfigError::new(
                            "delivery.dns.nameservers",
                            format!("`{s}` is not an IP or IP:port"),
                        )
                    })
            })
            .collect()
    }
}

/// `host:port` with a port; the host may be a name or an IP (IPv6 in brackets).
fn check_host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(key, format!("`{value}` is not host:port")))
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(key, format!("`{value}` is not an IP:port address")))
}

impl Config {
    /// Checks what types alone cannot: addresses, ranges, and that the chosen storage
    /// backend has its section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, l) in self.smtp.listener_list() {
            if l.enabled {
                parse_addr(&format!("smtp.listeners.{name}.address"), &l.address)?;
            }
        }
        if self.smtp.listeners.submissions.enabled && self.smtp.tls.is_none() {
            return Err(ConfigError::new(
                "smtp.listeners.submissions",
                "implicit TLS needs smtp.tls (cert_path, key_path)",
            ));
        }
        if self.http.enabled {
            parse_addr("http.address", &self.http.address)?;
        }
        let limits = &self.smtp.limits;
        let positive = [
            ("max_message_size", limits.max_message_size as u64),
            ("max_recipients", limits.max_recipients as u64),
            ("command_timeout_seconds", limits.command_timeout_seconds),
            ("data_timeout_seconds", limits.data_timeout_seconds),
            ("max_sessions", limits.max_sessions as u64),
            ("max_sessions_per_ip", limits.max_sessions_per_ip as u64),
            ("write_timeout_seconds", limits.write_timeout_seconds),
            ("max_session_seconds", limits.max_session_seconds),
            ("data_memory_bytes", limits.data_memory_bytes as u64),
            (
                "max_inflight_data_bytes",
                limits.max_inflight_data_bytes as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(
                    format!("smtp.limits.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if limits.max_line_length < 1000 {
            return Err(ConfigError::new(
                "smtp.limits.max_line_length",
                "must be at least 1000 (RFC 5321 §4.5.3.1.6)",
            ));
        }
        if !(32..=128).contains(&limits.ipv6_prefix_length) {
            return Err(ConfigError::new(
                "smtp.limits.ipv6_prefix_length",
                "must be between 32 and 128",
            ));
        }
        // Half holds finished bodies: one largest message and its Received header.
        let least = limits
            .max_message_size
            .saturating_add(64 * 1024)
            .saturating_mul(2);
        if limits.max_inflight_data_bytes < least {
            return Err(ConfigError::new(
                "smtp.limits.max_inflight_data_bytes",
                format!(
                    "must be at least {least}: twice smtp.limits.max_message_size plus 64 KiB (half of it holds finished bodies)"
                ),
            ));
        }
        for (key, value) in [
            ("max_spool_bytes", limits.max_spool_bytes),
            (
                "max_spool_bytes_per_client",
                limits.max_spool_bytes_per_client,
            ),
        ] {
            if value < limits.max_message_size as u64 {
                return Err(ConfigError::new(
                    format!("smtp.limits.{key}"),
                    "must be at least smtp.limits.max_message_size (one whole message)",
                ));
            }
        }
        // Timeouts beyond a day are mistakes, and would overflow deadline arithmetic.
        for (key, value) in [
            ("command_timeout_seconds", limits.command_timeout_seconds),
            ("data_timeout_seconds", limits.data_timeout_seconds),
            ("write_timeout_seconds", limits.write_timeout_seconds),
            ("max_session_seconds", limits.max_session_seconds),
        ] {
            if value > 86_400 {
                return Err(ConfigError::new(
                    format!("smtp.limits.{key}"),
                    "must be at most 86400 (one day)",
                ));
            }
        }
        self.validate_auth()?;
        self.smtp.validate_submission()?;
        if self.server.hostname.is_empty() || self.server.hostname.contains(char::is_whitespace) {
            return Err(ConfigError::new("server.hostname", "must be a host name"));
        }
        if !(self.database.is_sqlite() || self.database.url.starts_with("postgres")) {
            return Err(ConfigError::new(
                "database.url",
                "must start with sqlite: or postgres:",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::new(
                "database.max_connections",
                "must be greater than 0",
            ));
        }
        match self.storage.backend {
            StorageBackend::Fs if self.storage.fs.is_none() => {
                return Err(ConfigError::new("storage.fs", "missing for backend fs"));
            }
            StorageBackend::S3 => match &self.storage.s3 {
                None => return Err(ConfigError::new("storage.s3", "missing for backend s3")),
                Some(s3) if s3.bucket.is_empty() => {
                    return Err(ConfigError::new("storage.s3.bucket", "must not be empty"));
                }
                _ => {}
            },
            _ => {}
        }
        let seconds = |v: f64| v.is_finite() && v > 0.0 && v <= 86_400.0;
        if !(seconds(self.health.interval_seconds) && seconds(self.health.probe_timeout_seconds)) {
            return Err(ConfigError::new(
                "health",
                "interval and probe timeout must be > 0 and at most 86400 seconds",
            ));
        }
        if self.health.failures_before_down == 0 {
            return Err(ConfigError::new(
                "health.failures_before_down",
                "must be at least 1",
            ));
        }
        self.validate_queue()?;
        self.validate_hooks()?;
        let rotation = &self.logging.rotation;
        if !(rotation.max_size_mb.is_finite() && rotation.max_size_mb > 0.0) {
            return Err(ConfigError::new(
                "logging.rotation.max_size_mb",
                "must be greater than 0",
            ));
        }
        if rotation.max_files == 0 {
            return Err(ConfigError::new(
                "logging.rotation.max_files",
                "must be at least 1",
            ));
        }
        let tracing = &self.telemetry.tracing;
        if !(0.0..=1.0).contains(&tracing.sample_rate) {
            return Err(ConfigError::new(
                "telemetry.tracing.sample_rate",
                "must be between 0 and 1",
            ));
        }
        if tracing.enabled
            && !(tracing.endpoint.starts_with("http://")
                || tracing.endpoint.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "telemetry.tracing.endpoint",
                "must be an http:// or https:// URL (OTLP/HTTP, e.g. http://collector:4318)",
            ));
        }
        if !(1..=36_500).contains(&self.audit.retention_days) {
            return Err(ConfigError::new(
                "audit.retention_days",
                "must be between 1 and 36500 (100 years)",
            ));
        }
        self.api.trusted_proxy_networks()?;
        self.retention.validate()?;
        for (i, origin) in self.api.cors.allowed_origins.iter().enumerate() {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            if !rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '*', ' '])) {
                return Err(ConfigError::new(
                    format!("api.cors.allowed_origins[{i}]"),
                    format!("`{origin}` is not an origin like https://admin.example.org"),
                ));
            }
        }
        if !matches!(
            self.logging.level.as_str(),
            "trace" | "debug" | "info" | "warn" | "error"
        ) && !self.logging.level.contains('=')
        {
            return Err(ConfigError::new(
                "logging.level",
                "must be trace, debug, info, warn, error or a filter directive",
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        let positive = [
            (
                "max_failures_per_address",
                u64::from(a.max_failures_per_address),
            ),
            (
                "max_failures_per_account",
                u64::from(a.max_failures_per_account),
            ),
            ("failure_window_seconds", a.failure_window_seconds),
            ("lockout_seconds", a.lockout_seconds),
            ("audit_summary_seconds", a.audit_summary_seconds),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(
                    format!("auth.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if a.max_failure_delay_ms < a.failure_delay_ms {
            return Err(ConfigError::new(
                "auth.max_failure_delay_ms",
                "must be at least auth.failure_delay_ms",
            ));
        }
        Ok(())
    }

    fn validate_hooks(&self) -> Result<(), ConfigError> {
        self.hook_policy.validate()?;
        let mut ids = std::collections::HashSet::new();
        for (i, h) in self.hooks.iter().enumerate() {
            if !ids.insert(h.id.as_str()) {
                return Err(ConfigError::new(format!("hooks[{i}].id"), "must be unique"));
            }
            h.validate().map_err(|(field, reason)| {
                ConfigError::new(format!("hooks[{i}].{field}"), reason)
            })?;
        }
        Ok(())
    }

    fn validate_queue(&self) -> Result<(), ConfigError> {
        let q = &self.queue;
        let positive = [
            ("queue.poll_interval_seconds", q.poll_interval_seconds),
            ("queue.lease_seconds", q.lease_seconds),
            ("queue.max_age_seconds", q.max_age_seconds),
            ("queue.retry.initial_seconds", q.retry.initial_seconds),
            ("queue.retry.max_seconds", q.retry.max_seconds),
            (
                "delivery.connect_timeout_seconds",
                self.delivery.connect_timeout_seconds,
            ),
            (
                "delivery.command_timeout_seconds",
                self.delivery.command_timeout_seconds,
            ),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::new(key, "must be a number greater than 0"));
            }
        }
        if !(q.retry.factor.is_finite() && q.retry.factor >= 1.0) {
            return Err(ConfigError::new("queue.retry.factor", "must be at least 1"));
        }
        if q.max_batch_bytes == 0 {
            return Err(ConfigError::new(
                "queue.max_batch_bytes",
                "must be greater than 0",
            ));
        }
        if q.batch_size == 0 {
            return Err(ConfigError::new(
                "queue.batch_size",
                "must be greater than 0",
            ));
        }
        if self.delivery.max_messages_per_connection == 0 {
            return Err(ConfigError::new(
                "delivery.max_messages_per_connection",
                "must be greater than 0",
            ));
        }
        for (domain, target) in &self.delivery.routes {
            check_host_port(&format!("delivery.routes.{domain}"), target)?;
        }
        if let Some(smarthost) = &self.delivery.smarthost {
            check_host_port("delivery.smarthost", smarthost)?;
        }
        self.delivery.dns.nameserver_addrs()?;
        Ok(())
    }
}

impl SmtpConfig {
    pub fn listener_list(&self) -> [(&'static str, &ListenerConfig); 3] {
        [
            ("inbound", &self.listeners.inbound),
            ("submission", &self.listeners.submission),
            ("submissions", &self.listeners.submissions),
        ]
    }
}

#[cfg(test)]
mod tests;
