//! Test harness: runs the real `mairust` binary on loopback ports chosen by the OS, on
//! SQLite + fs by default, or on PostgreSQL + S3 when `MAIRUST_TEST_POSTGRES_URL` and
//! `MAIRUST_TEST_S3_ENDPOINT` are set (`.ci/run` sets both).
//!
//! Layout: `server` starts and stops a [`TestServer`] and runs its CLI; `inspect` reads
//! back its rows, bodies, audit file and HTTP answers; `config` writes its
//! configuration from [`Options`]; `backends` picks and cleans up its database and
//! object store; `smtp` delivers test messages. The helpers every suite uses are
//! re-exported here, and a few small ones live in this file.
#![allow(dead_code)]

pub mod api;
mod backends;
pub mod certs;
mod config;
pub mod dns;
pub mod haproxy;
pub mod hook_receiver;
pub mod http;
mod inspect;
pub mod moto;
pub mod otlp;
pub mod postgres;
pub mod raw;
pub mod rspamd;
mod server;
pub mod sink;
mod smtp;
pub mod webdriver;

// Each suite uses some of these: what one suite leaves unused is not dead.
#[allow(unused_imports)]
pub use backends::{Backend, S3Target, backend_available, postgres_url, s3_endpoint, s3_yaml};
#[allow(unused_imports)]
pub use config::{Options, config_yaml, mairust_actors_config};
#[allow(unused_imports)]
pub use server::TestServer;
#[allow(unused_imports)]
pub use smtp::{base64, deliver_to, deliver_to_bob, message, tls_login};

use std::process::Output;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mairust");
pub const DOMAIN: &str = "example.test";
pub const PASSWORD: &str = "correct horse battery staple";

/// Whether a peer program a test needs (`what`, installed by `how`) is here. Without
/// it the test is skipped with a line saying so, except in CI (`.ci/run` installs
/// every one), where that fails: a skip there would hide a test that never ran.
pub fn tool_available(found: bool, what: &str, how: &str) -> bool {
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{what} is needed in CI ({how})"
        );
        eprintln!("skipped: needs {what} ({how})");
    }
    found
}

/// Makes `command`'s process die (SIGKILL) when the thread that starts it ends, so a
/// helper server (HAProxy, moto, PostgreSQL) never outlives a test that was killed or
/// panicked before its guard could stop it. Start it from the test's own thread.
pub fn die_with_test(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
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

/// A loopback port nothing listens on (for fixed-port configurations and dead hops).
/// The value of one sample of a `/metrics` page by its series (`name` or
/// `name{labels}`, labels in Prometheus' order); a missing series fails the test: every
/// family and known label is exported from the first scrape.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
