//! The SmtpSession actor: one per connection, started on one of the SMTP arbiters. It
//! owns the connection and its [`Session`]; the session's end stops the actor, and
//! `stopped` releases the connection's place in the [`SessionRegistry`].

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;

use super::{ListenerKind, Session, SessionContext};
use crate::smtp::listener::SessionGuard;

pub struct SmtpSession {
    /// Taken in `started`: a std socket so it can cross to this actor's arbiter and be
    /// registered with that arbiter's reactor.
    socket: Option<std::net::TcpStream>,
    session: Option<Session>,
    _guard: SessionGuard,
}

impl SmtpSession {
    pub fn new(
        socket: std::net::TcpStream,
        ctx: Arc<SessionContext>,
        listener: ListenerKind,
        remote: SocketAddr,
        guard: SessionGuard,
    ) -> Self {
        SmtpSession {
            socket: Some(socket),
            session: Some(Session::new(ctx, listener, remote)),
            _guard: guard,
        }
    }
}

impl Actor for SmtpSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (Some(socket), Some(session)) = (self.socket.take(), self.session.take()) else {
            ctx.stop();
            return;
        };
        let fut = async move {
            match tokio::net::TcpStream::from_std(socket) {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    session.run(Box::new(tcp)).await;
                }
                Err(e) => {
                    tracing::warn!(component = "smtp", session_id = %session.id(), error = %e, "cannot register connection")
                }
            }
        };
        ctx.spawn(fut.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }
}
