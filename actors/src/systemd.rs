//! The service manager's notification protocol (`sd_notify(3)`): `serve` under a
//! `Type=notify` unit says READY=1 once every listener is bound, STATUS= lines as it
//! goes, RELOADING=1 … READY=1 around a SIGHUP, STOPPING=1 when the drain begins, and
//! WATCHDOG=1 while its event loop runs when the unit sets `WatchdogSec=`.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing. The
//! protocol is one datagram per message on the Unix socket the variable names; a name
//! starting with `@` is in the abstract namespace.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (newline-separated `KEY=value` assignments) to the service manager.
/// Ok(false) when no service manager listens (no `NOTIFY_SOCKET`).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send(&path, state).map(|()| true),
        None => Ok(false),
    }
}

/// One datagram with `state` to the socket `path` names. Never blocks: this runs on
/// the event loop, and a manager that does not read (its queue holds a handful of
/// datagrams) must not stall it; the datagram is dropped with an error instead.
fn send(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let bytes = path.as_encoded_bytes();
    match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some(b'/') => {
            socket.send_to(state.as_bytes(), path)?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@...)",
            ));
        }
    }
    Ok(())
}

/// [`notify`], with a failure logged instead of returned: a service manager that went
/// away must not stop the server.
pub fn tell(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(component = "supervisor", event = "sd_notify_failed", error = %e, "cannot notify the service manager");
    }
}

/// `STATUS=` with `text` on one line (a newline would start another assignment).
pub fn status(text: &str) {
    tell(&format!("STATUS={}", text.replace(['\n', '\r'], " ")));
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` that `Type=notify-reload` units require.
pub fn reloading() {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    tell(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// How often to send WATCHDOG=1: half of `WATCHDOG_USEC`, when the variable is set for
/// this process (`WATCHDOG_PID` absent or ours). None when no watchdog is armed.
pub fn watchdog_interval() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("mairust-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        // A manager that does not read: the sends fail once its queue is full, they
        // never block the caller.
        let started = std::time::Instant::now();
        let refused = (0..200)
            .filter(|_| send(path.as_os_str(), "WATCHDOG=1").is_err())
            .count();
        assert!(refused > 0, "the queue never filled");
        assert!(started.elapsed() < Duration::from_secs(5));

        let err = send(std::ffi::OsStr::new("relative/path"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
