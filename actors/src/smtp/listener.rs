//! SmtpListener: an accept loop of one listener (SPEC M1), with the session limits of
//! SPEC M2 (total and per IP; more get 421 4.7.0). Every SMTP arbiter runs one
//! SmtpListener per listening socket (clones of one socket), and each accepted
//! connection becomes an SmtpSession actor on that same arbiter: no thread hop per
//! connection, and the kernel spreads connections over the arbiters. On shutdown the
//! listeners stop accepting and drop their sockets. An SmtpListener is a task the
//! Supervisor restarts when its loop panics or fails, not an actor: it takes no message.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::proto::reply;
use super::session::actor::SmtpSession;
use super::session::{ListenerKind, SessionContext};
use crate::shutdown::Phase;

/// Counts open sessions in total and per client address (IPv6 per network of
/// `smtp.limits.ipv6_prefix_length`, see [`crate::limits::client_key`]). The
/// ShutdownCoordinator waits on it: every session holds a [`SessionGuard`] whose drop
/// is its deregistration.
pub struct SessionRegistry {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    ipv6_prefix: u8,
    total: AtomicUsize,
    max_total: AtomicUsize,
    max_per_ip: AtomicUsize,
    idle: Notify,
}

pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    ip: IpAddr,
}

impl SessionRegistry {
    pub fn new(max_total: usize, max_per_ip: usize, ipv6_prefix: u8) -> Arc<Self> {
        Arc::new(SessionRegistry {
            per_ip: Mutex::new(HashMap::new()),
            ipv6_prefix,
            total: AtomicUsize::new(0),
            max_total: AtomicUsize::new(max_total),
            max_per_ip: AtomicUsize::new(max_per_ip),
            idle: Notify::new(),
        })
    }

    /// New limits for new sessions (configuration reload); open sessions stay.
    pub fn set_limits(&self, max_total: usize, max_per_ip: usize) {
        self.max_total.store(max_total, Ordering::Release);
        self.max_per_ip.store(max_per_ip, Ordering::Release);
    }

    pub fn active(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// A place for a new session, or `None` when a limit is reached.
    pub fn try_register(self: &Arc<Self>, ip: IpAddr) -> Option<SessionGuard> {
        let ip = crate::limits::client_key(ip, self.ipv6_prefix);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip.load(Ordering::Acquire)
            || self.total.load(Ordering::Acquire) >= self.max_total.load(Ordering::Acquire)
        {
            if *count == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Some(SessionGuard {
            registry: self.clone(),
            ip,
        })
    }

    /// Resolves when no session is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut per_ip = self
            .registry
            .per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        drop(per_ip);
        if self.registry.total.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.idle.notify_waiters();
        }
    }
}

/// One listener's accept loop on one SMTP arbiter. Not an actor: a plain task the
/// Supervisor runs and restarts ([`SmtpListener::accept_loop`]). It keeps its clone of
/// the listening socket across restarts, so the socket stays bound and connections wait
/// in its backlog while a failed loop waits for its restart.
pub struct SmtpListener {
    kind: ListenerKind,
    socket: std::net::TcpListener,
    ctx: Arc<SessionContext>,
    registry: Arc<SessionRegistry>,
}

impl SmtpListener {
    pub fn new(
        kind: ListenerKind,
        socket: std::net::TcpListener,
        ctx: Arc<SessionContext>,
        registry: Arc<SessionRegistry>,
    ) -> Self {
        SmtpListener {
            kind,
            socket,
            ctx,
            registry,
        }
    }

    /// A new accept loop on a fresh clone of the socket, to run on the arbiter whose
    /// reactor it registers with. It returns at shutdown, or with an error when the
    /// socket cannot be used; each accepted connection becomes an SmtpSession actor on
    /// the same arbiter.
    pub fn accept_loop(&self) -> impl Future<Output = Result<(), String>> + use<> {
        let socket = self.socket.try_clone();
        let (kind, sctx, registry) = (self.kind, self.ctx.clone(), self.registry.clone());
        async move {
            let listener = socket
                .and_then(|socket| {
                    socket.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(socket)
                })
                .map_err(|e| format!("cannot start listener: {e}"))?;
            let mut shutdown = sctx.shutdown.clone();
            loop {
                if *shutdown.borrow() != Phase::Running {
                    break;
                }
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = shutdown.changed() => continue,
                };
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(component = "smtp", event = "accept_failed", listener = kind.name(), error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Supervision tests: the loop panics here, or ends with an error
                // (`return(text)`); the accepted connection is dropped.
                crate::failpoint::failpoint!("smtp_accept", |text: Option<String>| Err(
                    text.unwrap_or_else(|| "smtp_accept failpoint".into())
                ));
                let counted = crate::metrics::smtp_if(sctx.config.telemetry.metrics.enabled, kind);
                if let Some(m) = counted {
                    m.connections.inc();
                }
                let Some(guard) = registry.try_register(remote.ip()) else {
                    if let Some(m) = counted {
                        m.error_reply(reply::TOO_MANY_SESSIONS.code);
                    }
                    tracing::info!(component = "smtp", listener = kind.name(), remote = %remote, event = "session_limit", "too many sessions, refused");
                    actix::spawn(async move {
                        let mut stream = stream;
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            stream.write_all(&reply::TOO_MANY_SESSIONS.to_bytes()),
                        )
                        .await;
                    });
                    continue;
                };
                SmtpSession::new(stream, sctx.clone(), kind, remote, guard).start();
            }
            tracing::info!(
                component = "smtp",
                listener = kind.name(),
                event = "listener_closed",
                "stopped accepting connections"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_prefix_against_the_per_address_limit() {
        let registry = SessionRegistry::new(100, 2, 64);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = registry.try_register(ip("2001:db8:1:2::1")).unwrap();
        let _b = registry.try_register(ip("2001:db8:1:2:ffff::2")).unwrap();
        assert!(
            registry.try_register(ip("2001:db8:1:2:abcd::3")).is_none(),
            "a third address of the same /64"
        );
        let _c = registry.try_register(ip("2001:db8:1:3::1")).unwrap();
        drop(a);
        let d = registry.try_register(ip("2001:db8:1:2::9"));
        assert!(d.is_some());
        assert_eq!(registry.active(), 3);
    }
}
