//! The SmtpSession actor: one per connection, started on the arbiter that accepted it.
//! It owns the connection and its [`Session`]; the session's end stops the actor, and
//! dropping it releases the connection's place in the SessionRegistry.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;

use super::{ListenerKind, Session, SessionContext};
use crate::shutdown::SessionGuard;

pub struct SmtpSession {
    socket: Option<tokio::net::TcpStream>,
    session: Option<Session>,
    _guard: SessionGuard,
}

impl SmtpSession {
    pub fn new(
        socket: tokio::net::TcpStream,
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
            let _ = socket.set_nodelay(true);
            session.run(Box::new(socket)).await;
        };
        ctx.spawn(fut.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }
}
