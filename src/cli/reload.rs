//! Configuration reload (SPEC O4, O15): on SIGHUP the server reads its configuration
//! file again and, when it is valid, applies what can change at run time — the log level,
//! config.yaml's hooks and `hook_policy`, the rate limits (`api.auth_failures_per_minute`,
//! `smtp.limits.max_sessions`, `max_sessions_per_ip`) — reads the TLS certificate files
//! again (`smtp.tls`, `http.tls`), and names the changed sections that need a restart. An invalid file changes nothing. Either way an audit entry
//! `config.reload` says what happened.
//!
//! `mairust reload` sends SIGHUP to the process in `server.pid_file` and waits for that
//! audit entry, so it can say whether the reload worked. It signals only a process that
//! holds the pid file's lock and runs this same binary (checked through
//! `/proc/PID/exe`); when it cannot check, it refuses.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mairust_actors::audit::Entry;
use mairust_actors::config::Config;
use mairust_actors::supervisor::Handles;
use mairust_entities::audit_entry;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::api::auth::AuthLimiter;

/// What the running server can change without a restart.
pub struct Reloadable {
    pub handles: Handles,
    pub limiter: Arc<AuthLimiter>,
    /// The TLS certificates served (`smtp.tls`, `http.tls`): read again on every SIGHUP.
    pub certificates: Vec<Arc<mairust_actors::certs::CertStore>>,
}

/// Sections whose change needs a restart, by name.
fn restart_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut old_smtp = old.smtp.clone();
    let mut new_smtp = new.smtp.clone();
    // The session limits are applied live; everything else in smtp is not.
    old_smtp.limits.max_sessions = 0;
    old_smtp.limits.max_sessions_per_ip = 0;
    new_smtp.limits.max_sessions = 0;
    new_smtp.limits.max_sessions_per_ip = 0;
    let mut old_logging = old.logging.clone();
    old_logging.level = new.logging.level.clone();
    let mut old_api = old.api.clone();
    old_api.auth_failures_per_minute = new.api.auth_failures_per_minute;
    [
        differs("server", &old.server, &new.server),
        differs("smtp", &old_smtp, &new_smtp),
        differs("http", &old.http, &new.http),
        differs("database", &old.database, &new.database),
        differs("storage", &old.storage, &new.storage),
        differs("health", &old.health, &new.health),
        differs("logging", &old_logging, &new.logging),
        differs("api", &old_api, &new.api),
        differs("auth", &old.auth, &new.auth),
        differs("queue", &old.queue, &new.queue),
        differs("delivery", &old.delivery, &new.delivery),
        differs("audit", &old.audit, &new.audit),
        differs("telemetry", &old.telemetry, &new.telemetry),
        differs("dkim", &old.dkim, &new.dkim),
        differs("mail_auth", &old.mail_auth, &new.mail_auth),
        differs("spam", &old.spam, &new.spam),
        differs("send_limits", &old.send_limits, &new.send_limits),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `name` when the two versions of a section differ, compared through their `Debug`
/// text (which every section type has).
fn differs<T: std::fmt::Debug>(name: &'static str, old: &T, new: &T) -> Option<&'static str> {
    (format!("{old:?}") != format!("{new:?}")).then_some(name)
}

/// Reads `path` and applies what can change live over `applied` (the configuration the
/// server runs with: the start one plus what earlier reloads applied); sections that
/// differ from the start configuration are reported as needing a restart. Returns the
/// audit entry that tells what happened.
pub fn apply(path: &Path, started: &Config, applied: &mut Config, live: &Reloadable) -> Entry {
    let actor = "signal:SIGHUP";
    let new = match crate::config::load(Some(path)) {
        Ok((config, _)) => config,
        Err(e) => {
            tracing::error!(component = "supervisor", event = "reload_failed", error = %format!("{e:#}"), "configuration not reloaded; the running one stays");
            return Entry::failure("config.reload", actor)
                .target(path.display())
                .detail("error", format!("{e:#}"));
        }
    };
    let mut changed = Vec::new();
    if new.logging.level != applied.logging.level {
        match crate::telemetry::set_level(&new.logging.level) {
            Ok(()) => {
                applied.logging.level = new.logging.level.clone();
                changed.push("logging.level");
            }
            Err(e) => {
                tracing::error!(component = "supervisor", error = %e, "log level not changed")
            }
        }
    }
    if format!("{:?}", new.hooks) != format!("{:?}", applied.hooks) {
        live.handles.hooks.set_config_hooks(&new.hooks);
        applied.hooks = new.hooks.clone();
        changed.push("hooks");
    }
    if format!("{:?}", new.hook_policy) != format!("{:?}", applied.hook_policy) {
        // A new policy comes with a new HTTP client: no pooled connection opened under
        // the old policy serves a hook again.
        let applied_policy = mairust_actors::hooks::TargetPolicy::from_config(&new.hook_policy)
            .map_err(|e| e.to_string())
            .and_then(|policy| {
                live.handles
                    .hooks
                    .set_policy(policy)
                    .map_err(|e| e.to_string())
            });
        match applied_policy {
            Ok(()) => {
                applied.hook_policy = new.hook_policy.clone();
                changed.push("hook_policy");
            }
            // The configuration error is unreachable (`load` validated it); the client
            // error would be one of the TLS backend, which started fine before.
            Err(e) => {
                tracing::error!(component = "supervisor", event = "reload_failed", error = %e, "hook_policy not changed")
            }
        }
    }
    if new.api.auth_failures_per_minute != applied.api.auth_failures_per_minute {
        live.limiter
            .set_max_failures(new.api.auth_failures_per_minute);
        applied.api.auth_failures_per_minute = new.api.auth_failures_per_minute;
        changed.push("api.auth_failures_per_minute");
    }
    let (old_limits, new_limits) = (&applied.smtp.limits, &new.smtp.limits);
    if (old_limits.max_sessions, old_limits.max_sessions_per_ip)
        != (new_limits.max_sessions, new_limits.max_sessions_per_ip)
    {
        live.handles
            .sessions
            .set_limits(new_limits.max_sessions, new_limits.max_sessions_per_ip);
        applied.smtp.limits.max_sessions = new_limits.max_sessions;
        applied.smtp.limits.max_sessions_per_ip = new_limits.max_sessions_per_ip;
        changed.push("smtp.limits.max_sessions");
    }
    // The certificate files are read again whatever the configuration says (a renewal
    // changes the files, not config.yaml); one that does not load keeps the running one.
    let mut tls_errors = Vec::new();
    for store in &live.certificates {
        match store.reload_logged("SIGHUP") {
            Ok(true) => changed.push(store.name),
            Ok(false) => {}
            Err(e) => tls_errors.push(e),
        }
    }
    let restart = restart_sections(started, &new);
    if !tls_errors.is_empty() {
        return Entry::failure("config.reload", actor)
            .target(path.display())
            .detail("changed", changed)
            .detail("restart_needed", restart)
            .detail("error", tls_errors.join("; "))
            .detail("certificate_refused", true);
    }
    tracing::info!(component = "supervisor", event = "reloaded", changed = ?changed, restart_needed = ?restart, "configuration reloaded");
    if !restart.is_empty() {
        tracing::warn!(component = "supervisor", sections = ?restart, "these sections differ from the running ones and take effect only after a restart");
    }
    Entry::success("config.reload", actor)
        .target(path.display())
        .detail("changed", changed)
        .detail("restart_needed", restart)
}

/// Reloads on every SIGHUP until the process ends; each SIGHUP also reopens the audit
/// file (after logrotate moved it).
pub fn spawn_on_sighup(path: std::path::PathBuf, started: Config, live: Reloadable) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(component = "supervisor", error = %e, "cannot listen for SIGHUP; reload needs a restart");
            return;
        }
    };
    actix_rt::spawn(async move {
        let mut applied = started.clone();
        while hangups.recv().await.is_some() {
            tracing::info!(component = "supervisor", event = "sighup", config = %path.display(), "SIGHUP: reloading the configuration");
            mairust_actors::systemd::reloading();
            live.handles.audit.reopen();
            let entry = apply(&path, &started, &mut applied, &live);
            live.handles.audit.record(entry).await;
            mairust_actors::systemd::tell("READY=1");
        }
    });
}

/// `mairust reload`: SIGHUP to the running server, then its verdict from the audit log.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let Some(pid_file) = &config.server.pid_file else {
        bail!(
            "server.pid_file is not set in the configuration: set it (the server writes its process id there), or send SIGHUP to the server yourself"
        );
    };
    let target = Target::verify(pid_file)?;
    let db = super::open_current(config).await?;
    let node_prefix = format!("{}-", config.server.hostname);
    let last_before = last_reload(&db, &node_prefix).await?;
    target.hangup()?;
    let pid = target.pid;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(entry) = last_reload(&db, &node_prefix).await? else {
            continue;
        };
        if last_before.as_ref().is_some_and(|b| b.id >= entry.id) {
            continue;
        }
        let details: serde_json::Value = serde_json::from_str(&entry.details).unwrap_or_default();
        db.close().await.ok();
        if entry.outcome == "success" {
            println!("configuration reloaded (process {pid})");
            println!("  applied: {}", list(&details["changed"]));
            let restart = list(&details["restart_needed"]);
            if restart != "nothing" {
                println!("  changed but needing a restart: {restart}");
            }
            return Ok(());
        }
        let error = details["error"].as_str().unwrap_or("see the server log");
        if details["certificate_refused"] == true {
            println!("configuration reloaded (process {pid})");
            println!("  applied: {}", list(&details["changed"]));
            bail!("a TLS certificate was not reloaded, the running one stays: {error}");
        }
        bail!("the server refused the new configuration and keeps the running one: {error}");
    }
    db.close().await.ok();
    bail!("SIGHUP sent to process {pid}, but it confirmed nothing within 10 s: see the server log")
}

fn list(value: &serde_json::Value) -> String {
    let items: Vec<&str> = value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

/// The process `mairust reload` may signal: it holds the pid file's lock, the file names
/// it, and it runs this very binary. Anything short of that is refused: SIGHUP ends most
/// other programs, and a pid file left by a crash may name a process that is not ours
/// any more.
struct Target {
    pid: i32,
    /// A pidfd taken before the checks, so the signal reaches the process that was
    /// checked even if its id were reused in between (none on kernels before 5.3).
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl Target {
    fn verify(pid_file: &Path) -> anyhow::Result<Target> {
        let shown = pid_file.display();
        let Some(seen) = super::pidfile::observe(pid_file)? else {
            bail!(
                "cannot read {shown}: no such file (is the server running with this configuration?)"
            );
        };
        let Some(pid) = seen.pid else {
            bail!(
                "{shown} does not hold a process id (a server writes it once it is ready: still starting?)"
            );
        };
        let pidfd = pidfd_open(pid);
        // Read after the pidfd is taken: the holder now is the process the pidfd names.
        // Locks of other users' processes are listed too: the lock first, the process's
        // permissions after.
        match super::pidfile::lock_holder(seen.ino) {
            None => bail!(
                "{shown} names process {pid}, but no process holds its lock: a stale pid file (the server is not running); not signalled"
            ),
            Some(holder) if holder != pid => bail!(
                "{shown} names process {pid}, but process {holder} holds its lock: not signalled"
            ),
            Some(_) => {}
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                bail!(
                    "process {pid} belongs to another user: run `mairust reload` as the server's user"
                );
            }
            bail!("no process {pid} (from {shown}): the server is not running");
        }
        let theirs = format!("/proc/{pid}/exe");
        let exe = std::fs::read_link(&theirs).with_context(|| {
            format!(
                "cannot verify that process {pid} (from {shown}) is mairust: cannot read {theirs} (run `mairust reload` as the server's user); not signalled"
            )
        })?;
        let same = match (
            std::fs::metadata(&theirs),
            std::fs::metadata("/proc/self/exe"),
        ) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.dev() == b.dev() && a.ino() == b.ino()
            }
            (Err(e), _) | (_, Err(e)) => bail!(
                "cannot verify that process {pid} (from {shown}) is mairust: {e}; not signalled"
            ),
        };
        if !same {
            let mine = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "this program".into());
            let hint = if exe.to_string_lossy().ends_with(" (deleted)") {
                ": its binary was replaced since it started, so restart it instead (or send SIGHUP yourself)"
            } else {
                ""
            };
            bail!(
                "process {pid} (from {shown}) runs {}, not this mairust binary ({mine}){hint}; not signalled",
                exe.display()
            );
        }
        Ok(Target { pid, pidfd })
    }

    fn hangup(&self) -> anyhow::Result<()> {
        use std::os::fd::AsRawFd;
        let sent = match &self.pidfd {
            // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo, no flags.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGHUP,
                    std::ptr::null::<libc::siginfo_t>(),
                    0u32,
                )
            },
            // SAFETY: SIGHUP to the process just verified.
            None => unsafe { libc::kill(self.pid, libc::SIGHUP) }.into(),
        };
        if sent != 0 {
            bail!(
                "cannot signal process {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

/// A pidfd for `pid`, or none where the kernel has no pidfd_open.
fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open returns a new descriptor we then own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    // SAFETY: a non-negative return is a descriptor nobody else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// The newest reload entry of a node of this host name (nodes are `HOSTNAME-xxxxxxxx`).
async fn last_reload(
    db: &sea_orm::DatabaseConnection,
    node_prefix: &str,
) -> anyhow::Result<Option<audit_entry::Model>> {
    Ok(audit_entry::Entity::find()
        .filter(audit_entry::Column::Event.eq("config.reload"))
        .filter(audit_entry::Column::Node.starts_with(node_prefix))
        .filter(audit_entry::Column::Node.ne(format!("{node_prefix}cli")))
        .order_by_desc(audit_entry::Column::Id)
        .one(db)
        .await?)
}
