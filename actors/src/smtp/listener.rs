//! SmtpListener: an accept loop of one listener (SPEC M1), with the session limits of
//! SPEC M2 (total and per IP, counted by the [`SessionRegistry`]; more get 421 4.7.0).
//! Every SMTP arbiter runs one SmtpListener per listening socket (clones of one
//! socket), and each accepted connection becomes an SmtpSession actor on that same
//! arbiter: no thread hop per connection, and the kernel spreads connections over the
//! arbiters. On shutdown the listeners stop accepting and drop their sockets. An
//! SmtpListener is a task the Supervisor restarts when its loop panics or fails, not an
//! actor: it takes no message.
//!
//! With `proxy_protocol` on the listener, a connection from a trusted proxy first
//! gives its PROXY header (read on its own task, bounded in time and size), and the
//! client it names is the one the session limits count and the session serves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::session::SessionContext;
use super::session::actor::SmtpSession;
use crate::net::ListenerKind;
use crate::proto::{proxy, reply};
use crate::shutdown::{Phase, SessionRegistry};

/// One listener's accept loop on one SMTP arbiter. Not an actor: a plain task the
/// Supervisor runs and restarts ([`SmtpListener::accept_loop`]). It keeps its clone of
/// the listening socket across restarts, so the socket stays bound and connections wait
/// in its backlog while a failed loop waits for its restart.
pub struct SmtpListener {
    kind: ListenerKind,
    socket: std::net::TcpListener,
    ctx: Arc<SessionContext>,
    registry: Arc<SessionRegistry>,
    proxies: Option<Arc<TrustedProxies>>,
}

/// The proxies whose PROXY header this listener takes.
#[derive(Debug)]
pub struct TrustedProxies {
    networks: Vec<ipnet::IpNet>,
    timeout: Duration,
    /// Connections whose header is still awaited (each holds a socket before the
    /// session limits count it), at most `max_pending`.
    pending: std::sync::atomic::AtomicUsize,
    max_pending: usize,
}

impl TrustedProxies {
    /// `networks` written as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) are taken as the
    /// IPv4 networks they are, as peers are.
    pub fn new(networks: Vec<ipnet::IpNet>, timeout: Duration, max_pending: usize) -> Self {
        let networks = networks
            .into_iter()
            .map(|n| match n {
                ipnet::IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                    Some(v4) if v6.prefix_len() >= 96 => {
                        ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                            .map(ipnet::IpNet::V4)
                            .unwrap_or(n)
                    }
                    _ => n,
                },
                v4 => v4,
            })
            .collect();
        TrustedProxies {
            networks,
            timeout,
            pending: std::sync::atomic::AtomicUsize::new(0),
            max_pending,
        }
    }

    fn trusts(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.networks.iter().any(|n| n.contains(&peer))
    }
}

/// One connection waiting for its PROXY header, counted while it waits.
struct PendingHeader(Arc<TrustedProxies>);

impl PendingHeader {
    fn take(proxies: &Arc<TrustedProxies>) -> Option<PendingHeader> {
        use std::sync::atomic::Ordering;
        proxies
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < proxies.max_pending).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingHeader(proxies.clone()))
    }
}

impl Drop for PendingHeader {
    fn drop(&mut self) {
        self.0
            .pending
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl SmtpListener {
    pub fn new(
        kind: ListenerKind,
        socket: std::net::TcpListener,
        ctx: Arc<SessionContext>,
        registry: Arc<SessionRegistry>,
        proxies: Option<Arc<TrustedProxies>>,
    ) -> Self {
        SmtpListener {
            kind,
            socket,
            ctx,
            registry,
            proxies,
        }
    }

    /// A new accept loop on a fresh clone of the socket, to run on the arbiter whose
    /// reactor it registers with. It returns at shutdown, or with an error when the
    /// socket cannot be used; each accepted connection becomes an SmtpSession actor on
    /// the same arbiter.
    pub fn accept_loop(&self) -> impl Future<Output = Result<(), String>> + use<> {
        let socket = self.socket.try_clone();
        let (kind, sctx, registry) = (self.kind, self.ctx.clone(), self.registry.clone());
        let proxies = self.proxies.clone();
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
                if let Some(proxies) = proxies.as_ref().filter(|p| p.trusts(remote.ip())) {
                    let Some(waiting) = PendingHeader::take(proxies) else {
                        // As many header waits as sessions may exist: a proxy (or a host
                        // in a trusted range) holding connections open without a header
                        // gets no more sockets.
                        crate::limits::hit(crate::limits::Limit::ProxyPending);
                        continue;
                    };
                    let (timeout, sctx, registry) =
                        (proxies.timeout, sctx.clone(), registry.clone());
                    actix::spawn(async move {
                        let _waiting = waiting;
                        let mut stream = stream;
                        let client = match tokio::time::timeout(
                            timeout,
                            read_proxy_header(&mut stream),
                        )
                        .await
                        {
                            Ok(Ok(header)) => header.addresses.map_or(remote, |(client, _)| {
                                SocketAddr::new(client.ip().to_canonical(), client.port())
                            }),
                            Ok(Err(error)) => {
                                tracing::warn!(component = "smtp", listener = kind.name(), proxy = %remote, event = "proxy_header_invalid", error = %error, "bad PROXY header from a trusted proxy, connection closed");
                                return;
                            }
                            Err(_) => {
                                tracing::warn!(component = "smtp", listener = kind.name(), proxy = %remote, event = "proxy_header_timeout", "no PROXY header from a trusted proxy in time, connection closed");
                                return;
                            }
                        };
                        tracing::debug!(component = "smtp", listener = kind.name(), proxy = %remote, remote = %client, event = "proxied", "client named by the PROXY header");
                        admit(stream, client, kind, &sctx, &registry);
                    });
                    continue;
                }
                admit(stream, remote, kind, &sctx, &registry);
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

/// Starts a session for `remote` if the session limits let it in (421 otherwise).
fn admit(
    stream: TcpStream,
    remote: SocketAddr,
    kind: ListenerKind,
    sctx: &Arc<SessionContext>,
    registry: &Arc<SessionRegistry>,
) {
    let Some(guard) = registry.try_register(remote.ip()) else {
        if let Some(m) = crate::metrics::smtp_if(sctx.config.telemetry.metrics.enabled, kind) {
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
        return;
    };
    SmtpSession::new(stream, sctx.clone(), kind, remote, guard).start();
}

/// Reads exactly the PROXY header (never a byte of what follows it).
async fn read_proxy_header(stream: &mut TcpStream) -> Result<proxy::Header, String> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match proxy::parse(&buf).map_err(|e| e.to_string())? {
            proxy::Parsed::NeedMore(n) => {
                let have = buf.len();
                buf.resize(n, 0);
                stream
                    .read_exact(&mut buf[have..])
                    .await
                    .map_err(|e| format!("reading the header: {e}"))?;
            }
            proxy::Parsed::Header { header, .. } => return Ok(header),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_networks_match_canonical_peers() {
        let nets = ["10.1.0.0/16", "::ffff:192.0.2.0/120", "2001:db8::/32"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let t = TrustedProxies::new(nets, Duration::from_secs(1), 2);
        for (peer, trusted) in [
            ("10.1.2.3", true),
            ("::ffff:10.1.2.3", true),
            ("10.2.0.1", false),
            ("192.0.2.77", true),
            ("::ffff:192.0.2.77", true),
            ("192.0.3.1", false),
            ("2001:db8::5", true),
            ("2001:db9::5", false),
        ] {
            assert_eq!(t.trusts(peer.parse().unwrap()), trusted, "{peer}");
        }
        let t = Arc::new(t);
        let (a, b) = (PendingHeader::take(&t), PendingHeader::take(&t));
        assert!(a.is_some() && b.is_some());
        assert!(PendingHeader::take(&t).is_none(), "over max_pending");
        drop(a);
        assert!(PendingHeader::take(&t).is_some(), "a slot freed");
    }
}
