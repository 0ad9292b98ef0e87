//! The MaiRust mail engine: the actor tree and everything it runs.
//!
//! Layout:
//! - [`supervisor`] — root of the tree: starts the rest in order and restarts the
//!   children that panic or stop (backoff, restart budget, `actor_restarted`)
//! - [`failpoint`] — failures on purpose for the supervision tests (feature `failpoints`)
//! - [`smtp`] — sessions, listeners, TLS
//! - [`certs`] — TLS certificates served from files, reloaded without a restart
//! - [`proto`] — the SMTP wire protocol, pure: commands, replies, DATA, SASL
//! - [`storage`] — StorageActor with group commit, object store (fs | s3)
//! - [`queue`] — outbound queue: QueueWorkers, delivery, retries, DSNs
//! - [`hooks`] — HTTP hooks: HMAC-signed calls, fallbacks, circuit breakers
//! - [`metrics`] — the Prometheus registry and every metric (SPEC O1)
//! - [`health`] — HealthMonitor: probes the database and the object store
//! - [`health_state`] — what the probes found ([`health_state::HealthState`]), read by
//!   sessions and `/health`; actors report failures there ([`health_state::DependencyFailed`])
//! - [`trace`] — head sampling of SMTP transactions for the trace export
//! - [`audit`] — the audit log (file and database), [`janitor`] prunes it
//! - [`retention`] — purging soft-deleted messages (the janitor runs it on every node)
//! - [`tokens`] — hex text and random tokens (a leaf)
//! - [`json_line`] — JSON lines with no raw control character (audit file, JSON log)
//! - [`shutdown`] — ShutdownCoordinator (SIGTERM/SIGINT, drain, 421), the phase every
//!   session watches and the registry of open sessions (capped per SPEC M2)
//! - [`systemd`] — notifications to the service manager (READY=1, STOPPING=1, watchdog)
//! - [`net`] — what a connection is: its stream, its listener kind, its client key
//! - [`limits`] — bounds on what one client may take: password checks, failed-AUTH
//!   throttling, DATA memory
//! - [`sender_auth`] — SPF, DKIM, DMARC and ARC checks of mail from other servers,
//!   Authentication-Results, what a failure costs
//! - [`spam`] — rspamd scans and what their verdict does
//! - [`accounts`] — domains, users, mailboxes (query functions)
//! - [`apikeys`] — REST API keys and scopes
//! - [`signin`] — the one password check of SMTP AUTH and the web sign-in
//! - [`websessions`] — browser sessions of signed-in users (the Admin UI)
//! - [`dkim`] — DKIM keys (sealed in the database) and the signing of submitted mail
//! - [`submission`] — the one pipeline a message passes on its way in (SMTP and API):
//!   sender and recipient policy, hooks, Received, storage; the recipient directory
//! - [`database`] — connection and schema version checks
//! - [`sqlite`] — SQLite files opened directly: the storage row writer, the directory's
//!   recipient lookups
//! - [`config`] — the configuration model and its validation

pub mod accounts;
pub mod apikeys;
pub mod audit;
pub mod certs;
pub mod config;
pub mod database;
pub mod dkim;
pub mod failpoint;
pub mod health;
pub mod health_state;
pub mod hooks;
pub mod janitor;
pub mod json_line;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod private_dir;
pub mod proto;
pub mod queue;
pub mod retention;
pub mod sender_auth;
pub mod shutdown;
pub mod signin;
pub mod smtp;
pub mod spam;
pub mod sqlite;
pub mod storage;
pub mod submission;
pub mod supervisor;
pub mod systemd;
pub mod tokens;
pub mod trace;
pub mod websessions;
