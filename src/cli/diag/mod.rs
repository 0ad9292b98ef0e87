//! Diagnostics (SPEC O9, O13): `mairust health check`, `mairust status`,
//! `mairust check db|storage|smtp` and `mairust logs`. Plain text for people, `--json`
//! for scripts; exit 0 when all is well, 1 when not.
//!
//! Layout: `server` asks the running server over HTTP (`health check`, `status`);
//! `checks` probes the database, the object store and an SMTP listener itself, without
//! the server; `logs` reads and follows the JSON log file.

mod checks;
mod logs;
mod server;

pub use checks::{CheckArgs, check};
pub use logs::{LogsArgs, logs};
pub use server::{HealthAction, StatusArgs, health, server_answers, status};

use std::net::SocketAddr;

use anyhow::{Context, bail};

/// The address to reach a listener configured as `address` (0.0.0.0 → 127.0.0.1).
fn reachable(address: &str, key: &str) -> anyhow::Result<SocketAddr> {
    let mut addr: SocketAddr = address
        .parse()
        .with_context(|| format!("{key}: `{address}` is not IP:port"))?;
    if addr.port() == 0 {
        bail!("{key} has port 0 (chosen at start): the CLI cannot know where to connect");
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(addr)
}
