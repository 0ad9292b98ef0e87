//! `mairust serve`: takes `server.pid_file` (one server per file, see `pidfile`), opens
//! the database (initialising a fresh one, refusing an older or newer schema), starts the
//! actor tree and the HTTP server, and waits for the ShutdownCoordinator to finish the
//! graceful shutdown. At start it warns about secret files other users can read.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use mairust_actors::config::Config;
use mairust_actors::database::{self, SchemaStatus};
use mairust_actors::supervisor::{GetHandles, Supervisor};
use tokio::sync::oneshot;

use super::pidfile::PidFile;

pub fn run(
    config: Config,
    path: &Path,
    telemetry: crate::telemetry::Telemetry,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    // Test builds only: children that fail on purpose (FAILPOINTS, supervision tests).
    let _failpoints = mairust_actors::failpoint::from_env();
    // Taken first: a second server on the same pid file stops here, before it opens
    // the database or a listener.
    let pid_file = match &config.server.pid_file {
        Some(p) => Some(PidFile::acquire(p)?),
        None => None,
    };
    let pid_file = pid_file.as_ref();
    raise_fd_limit(config.smtp.limits.max_sessions);
    return_large_allocations();
    prepare_spool_dir(&config)?;
    let result = actix_rt::System::new().block_on(async move {
        tracing::info!(component = "supervisor", event = "starting", config = %path.display(), version = env!("CARGO_PKG_VERSION"), "starting MaiRust");
        for (old, new) in config.smtp.deprecated_keys() {
            tracing::warn!(component = "supervisor", event = "config_deprecated", key = old, replacement = new, "deprecated configuration key; rename it");
        }
        warn_if_readable_by_others(&config, path);
        mairust_actors::systemd::status("starting: connecting to the database");
        let db = super::connect(&config).await?;
        match database::schema_status(&db).await? {
            SchemaStatus::Current => {
                // Rows a crash after `migrate` left unwritten (missing ones count as
                // breaking for older nodes until then).
                if let Err(e) = database::record_compat(&db).await {
                    tracing::warn!(component = "supervisor", error = %e, "schema_compat not brought up to date");
                }
            }
            SchemaStatus::Ahead { unknown, breaking } if breaking.is_empty() => {
                tracing::warn!(component = "supervisor", event = "schema_newer_compatible", migrations = ?unknown, "the database schema is newer than this binary by additive migrations only: serving (a rolling upgrade is under way; upgrade this node)");
            }
            SchemaStatus::Fresh => {
                database::migrate_up(&db).await.context("initialising the database")?;
                tracing::info!(component = "supervisor", event = "database_initialised", "fresh database initialised");
            }
            status => return Err(super::schema_error(&status)),
        }
        mairust_actors::systemd::status("starting: object store, actors and listeners");
        let (finished_tx, finished_rx) = oneshot::channel();
        // Before the listeners open: a bad http.tls stops the start before any client is
        // served.
        let http_certs = match (&config.http.tls, config.http.enabled) {
            (Some(tls), true) => Some(mairust_actors::certs::CertStore::open("http.tls", tls, &config.server.hostname)?),
            _ => None,
        };
        let supervisor = Supervisor::start(config.clone(), db.clone(), finished_tx).await?;
        let handles = supervisor.send(GetHandles).await?;
        let limiter = Arc::new(crate::api::auth::AuthLimiter::new(config.api.auth_failures_per_minute));
        let certificates: Vec<_> = handles.smtp_certs.iter().chain(http_certs.iter()).cloned().collect();
        super::reload::spawn_on_sighup(
            path.to_path_buf(),
            (*config).clone(),
            super::reload::Reloadable { handles: handles.clone(), limiter: limiter.clone(), certificates: certificates.clone() },
        );
        mairust_actors::certs::watch(certificates, std::time::Duration::from_secs(config.server.certificate_check_seconds));
        let http = if config.http.enabled {
            let (server, addrs) = crate::api::server(handles.clone(), limiter, http_certs.as_ref())
                .with_context(|| format!("http.address: cannot listen on {}", config.http.address))?;
            for addr in &addrs {
                tracing::info!(component = "api", event = "listening", listener = "http", addr = %addr, "HTTP server ready");
            }
            let handle = server.handle();
            actix_rt::spawn(server);
            Some(handle)
        } else {
            None
        };
        // The id is written once SIGHUP is handled and everything listens: `mairust
        // reload` finds it only then.
        if let Some(pid_file) = pid_file {
            pid_file.publish()?;
        }
        // Every node's health on the Admin UI's dashboard, HTTP or not.
        actix_rt::spawn(crate::api::health::publish(handles.clone()));
        tracing::info!(component = "supervisor", event = "ready", node = %handles.node_id, "MaiRust is ready");
        let listening: Vec<String> = handles.listeners.iter().map(|(name, addr)| format!("{name} {addr}")).collect();
        mairust_actors::systemd::tell(&format!(
            "READY=1\nSTATUS=serving: {}; node {}",
            listening.join(", "),
            handles.node_id
        ));
        if let Some(every) = mairust_actors::systemd::watchdog_interval() {
            // Sent from this event loop: a loop that stops turning stops the pings, and
            // the service manager restarts the process.
            actix_rt::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    mairust_actors::systemd::tell("WATCHDOG=1");
                }
            });
        }
        let _ = finished_rx.await;
        if let Some(http) = http {
            http.stop(true).await;
        }
        crate::api::health::withdraw(&handles).await;
        actix::System::current().stop();
        db.close().await.ok();
        tracing::info!(component = "supervisor", event = "stopped", "MaiRust stopped");
        Ok(())
    });
    telemetry.shutdown();
    result
}

/// Warns (naming the path) about secrets other local users can read: the TLS key, the
/// configuration (database password, S3 keys, hook secrets) and the SQLite database
/// (password and API key hashes). Files this version creates are private (the umask
/// `main` sets); these may come from an older install or the operator's editor.
fn warn_if_readable_by_others(config: &Config, config_path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![("config", config_path.to_path_buf())];
    if let Some(tls) = &config.smtp.tls {
        files.push(("tls_key", tls.key_path.clone()));
    }
    if let Some(db) = database::sqlite_path(&config.database.url) {
        files.push(("database", db));
    }
    for (what, path) in files {
        // A missing file is someone else's error (or created later, privately).
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(component = "supervisor", event = "readable_by_others", file = what, path = %path.display(), mode = %format!("{mode:04o}"), "this file is readable or writable by other users (group/others); chmod 600 it");
        }
    }
}

/// Each SMTP session holds a socket: raise the soft open-files limit to the hard one
/// (service managers often start processes at 1024) and warn when it is still too low
/// for `smtp.limits.max_sessions`.
fn raise_fd_limit(max_sessions: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // A session spooling a large body holds a second descriptor.
    let needed = 2 * max_sessions as u64 + 256;
    if limit.rlim_cur < needed {
        tracing::warn!(
            component = "supervisor",
            event = "fd_limit_low",
            limit = limit.rlim_cur,
            needed,
            "open-files limit is below twice smtp.limits.max_sessions (a spooling session holds two); raise LimitNOFILE or lower max_sessions"
        );
    }
}

/// Makes glibc serve every allocation of 1 MiB or more with its own mapping, returned
/// to the system when freed. By default glibc raises that threshold to the largest block
/// freed so far (up to 32 MiB), after which blocks such as an argon2id check's 19 MiB or
/// a large message body stay cached in each thread's arena: a burst of password checks
/// on many blocking threads kept hundreds of MiB (gigabytes in the attack) long
/// after it ended. A fixed threshold turns that off.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads
    // of this process allocate in earnest.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Creates `smtp.limits.spool_dir` (mode 0700: message bodies) and warns when the spool
/// lives on tmpfs, where spooled bodies would take memory after all.
fn prepare_spool_dir(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = config
        .smtp
        .limits
        .spool_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    if config.smtp.limits.spool_dir.is_some() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("smtp.limits.spool_dir: cannot create {}", dir.display()))?;
    }
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .context("smtp.limits.spool_dir: a NUL byte in the path")?;
    // SAFETY: statfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } == 0 && stat.f_type as i64 == TMPFS_MAGIC {
        tracing::warn!(component = "smtp", event = "spool_on_tmpfs", dir = %dir.display(), "the spool directory is on tmpfs: spooled message bodies take memory; set smtp.limits.spool_dir to a disk");
    }
    Ok(())
}
