//! SmtpListener: an accept loop of one listener (SPEC M1), with the session limits of
//! SPEC M2 (total and per IP, counted by the [`SessionRegistry`]; more get 421 4.7.0).
//! Every SMTP arbiter runs one SmtpListener per listening socket (clones of one
//! socket), and each accepted connection becomes an SmtpSession actor on that same
//! arbiter: no thread hop per connection, and the kernel spreads connections over the
//! arbiters. On shutdown the listeners stop accepting and drop their sockets.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::io::AsyncWriteExt;

use super::session::SessionContext;
use super::session::actor::SmtpSession;
use crate::net::ListenerKind;
use crate::proto::reply;
use crate::shutdown::{Phase, SessionRegistry};

pub struct SmtpListener {
    kind: ListenerKind,
    /// Taken in `started`, where it is registered with this arbiter's reactor.
    socket: Option<std::net::TcpListener>,
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
            socket: Some(socket),
            ctx,
            registry,
        }
    }
}

impl Actor for SmtpListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        let (kind, sctx, registry) = (self.kind, self.ctx.clone(), self.registry.clone());
        let fut = async move {
            let listener = match socket
                .set_nonblocking(true)
                .and_then(|_| tokio::net::TcpListener::from_std(socket))
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(component = "smtp", listener = kind.name(), error = %e, "cannot start listener");
                    return;
                }
            };
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
                        tracing::warn!(component = "smtp", listener = kind.name(), error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
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
        };
        ctx.spawn(fut.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }
}
