//! One SMTP session: a state machine driven by bytes from any stream.
//!
//! The session keeps what the client said (the [`Envelope`]) apart from what it may do
//! ([`ClientState`]: HELO, TLS, authenticated user, error count). It is generic over the
//! stream (plain TCP, TLS, or an in-memory pipe in tests) and does its own buffering:
//! replies to pipelined commands (RFC 2920) are collected and written in one go before
//! the session waits for more input.
//!
//! - [`commands`] — one handler per SMTP verb but AUTH
//! - [`auth`] — AUTH PLAIN and LOGIN, and the password check within the node's bounds
//! - [`finish`] — the end of DATA: the message goes through the submission pipeline
//! - [`incoming`] — a DATA body on its way in: memory budget, spooling to disk
//! - [`io`] — reads and writes, each within its time bound
//! - [`actor`] — the SmtpSession actor that owns a session and its connection
//!
//! What a session asks about accounts and where messages go are behind
//! [`SessionContext::pipeline`] (the [`crate::submission`] pipeline and its
//! [`crate::submission::Directory`]), so a session runs over an in-memory pipe with an
//! in-memory directory and store in tests, one verb at a time.
//!
//! Every wait on the client is bounded (SPEC M2, hostile clients): reads by the command
//! or DATA timeout, DATA as a whole by a minimum rate, every write by
//! `write_timeout_seconds`, and the whole session by `max_session_seconds`.

pub mod actor;
mod auth;
mod commands;
mod finish;
mod incoming;
mod io;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::Config;
use crate::limits::{self, Limit, NodeLimits};
use crate::metrics::SmtpMetrics;
use crate::net::{BoxStream, ListenerKind};
use crate::proto::command::MailFrom;
use crate::proto::line::{LineEvent, LineReader};
use crate::proto::reply::{self, Reply};
use crate::shutdown::Phase;
use crate::submission::{Pipeline, Recipients, Submitter};
use io::{Deadline, ReadOutcome};

/// What every session on every listener shares.
pub struct SessionContext {
    pub config: Arc<Config>,
    /// Accounts, policy, hooks and storage: the way every message gets in.
    pub pipeline: Arc<Pipeline>,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: watch::Receiver<Phase>,
    pub audit: Arc<crate::audit::AuditLog>,
    pub limits: Arc<NodeLimits>,
}

/// Counts an open session in `mairust_smtp_sessions` for as long as it lives.
struct OpenSession(&'static SmtpMetrics);

impl OpenSession {
    fn new(metrics: &'static SmtpMetrics) -> Self {
        metrics.sessions.inc();
        OpenSession(metrics)
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.sessions.dec();
    }
}

/// What the client said in the current mail transaction (RFC 5321 §3.3).
#[derive(Debug, Default)]
struct Envelope {
    /// When MAIL FROM was accepted: the transaction's start.
    started: Option<Instant>,
    /// The transaction's trace span; it ends with the reply after DATA.
    span: Option<tracing::Span>,
    mail: Option<MailFrom>,
    /// Local users, and remote addresses of an authenticated client (the outbound
    /// queue), as the recipient policy admitted them.
    recipients: Recipients,
}

/// What the client is and may do, independent of the transaction.
#[derive(Debug, Default)]
struct ClientState {
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    /// The authenticated account and the senders it may use (SPEC S5).
    authenticated: Option<Submitter>,
    bad_commands: u32,
}

#[derive(Debug)]
enum AuthStep {
    PlainResponse,
    LoginUsername,
    LoginPassword(String),
}

enum State {
    Command,
    Data(Box<incoming::Incoming>),
    Auth(AuthStep),
}

/// What the read/write loop does after a batch of input was handled.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    StartTls,
    Close,
}

pub struct Session {
    ctx: Arc<SessionContext>,
    listener: ListenerKind,
    remote: SocketAddr,
    /// The remote address as per-address limits count it (IPv6 by prefix).
    client_key: IpAddr,
    /// For `max_session_seconds`.
    started: Instant,
    id: String,
    rbuf: BytesMut,
    out: Vec<u8>,
    lines: LineReader,
    state: State,
    client: ClientState,
    envelope: Envelope,
    shutdown: watch::Receiver<Phase>,
    /// Shutdown began while a transaction was open: finish it, then say 421.
    draining: bool,
    /// None with `telemetry.metrics.enabled: false`.
    metrics: Option<&'static SmtpMetrics>,
}

impl Session {
    pub fn new(ctx: Arc<SessionContext>, listener: ListenerKind, remote: SocketAddr) -> Self {
        let shutdown = ctx.shutdown.clone();
        let ctx_metrics = ctx.config.telemetry.metrics.enabled;
        let client_key = ctx.limits.client(remote.ip());
        Session {
            ctx,
            listener,
            remote,
            client_key,
            started: Instant::now(),
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            rbuf: BytesMut::with_capacity(8192),
            out: Vec::with_capacity(1024),
            lines: LineReader::default(),
            state: State::Command,
            client: ClientState::default(),
            envelope: Envelope::default(),
            shutdown,
            draining: false,
            metrics: crate::metrics::smtp_if(ctx_metrics, listener),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs the session to its end. Errors end this session only (STYLE 6).
    pub async fn run(mut self, stream: BoxStream) {
        let mut stream = stream;
        let _open = self.metrics.map(OpenSession::new);
        if self.listener == ListenerKind::Submissions {
            match self.tls_handshake(stream).await {
                Some(s) => stream = s,
                None => return,
            }
        }
        tracing::debug!(component = "smtp", session_id = %self.id, listener = self.listener.name(), remote = %self.remote, event = "session_start", "session started");
        if *self.shutdown.borrow() != Phase::Running {
            self.reply(reply::SHUTTING_DOWN);
            let _ = self.flush(&mut stream).await;
            return;
        }
        self.reply(reply::greeting(&self.ctx.config.server.hostname));
        loop {
            let flow = self.process_input().await;
            if let Err(e) = self.flush(&mut stream).await {
                tracing::debug!(component = "smtp", session_id = %self.id, error = %e, "write failed");
                return;
            }
            match flow {
                Flow::Close => break,
                Flow::StartTls => {
                    // RFC 3207 §4.2: discard anything pipelined after STARTTLS (no
                    // plaintext command injection) and forget the pre-TLS state.
                    self.rbuf.clear();
                    match self.tls_handshake(stream).await {
                        Some(s) => stream = s,
                        None => return,
                    }
                    continue;
                }
                Flow::Continue => {}
            }
            match self.read_more(&mut stream).await {
                ReadOutcome::Data => {}
                ReadOutcome::Eof => {
                    if matches!(self.state, State::Data(_)) {
                        tracing::info!(component = "smtp", session_id = %self.id, event = "data_unterminated", "connection closed inside DATA; nothing stored");
                    }
                    break;
                }
                ReadOutcome::Timeout(deadline) => {
                    match deadline {
                        Deadline::Idle => {}
                        Deadline::DataRate => limits::hit(Limit::DataRate),
                        Deadline::Lifetime => limits::hit(Limit::SessionLifetime),
                    }
                    if deadline != Deadline::Idle {
                        tracing::info!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "session_deadline", deadline = ?deadline, "session ended by a time limit");
                    }
                    self.reply(deadline.reply());
                    let _ = self.flush(&mut stream).await;
                    break;
                }
                ReadOutcome::Shutdown(phase) => {
                    if phase == Phase::Closing || !self.in_transaction() {
                        self.reply(reply::SHUTTING_DOWN);
                        let _ = self.flush(&mut stream).await;
                        break;
                    }
                    self.draining = true;
                }
                ReadOutcome::Error(e) => {
                    tracing::debug!(component = "smtp", session_id = %self.id, error = %e, "read failed");
                    break;
                }
            }
        }
        // A TLS close_notify is a write too: bounded like the others.
        let _ = tokio::time::timeout(self.write_timeout(), stream.shutdown()).await;
        tracing::debug!(component = "smtp", session_id = %self.id, event = "session_end", "session ended");
    }

    async fn tls_handshake(&mut self, stream: BoxStream) -> Option<BoxStream> {
        let acceptor = self.ctx.tls.clone()?;
        let timeout = Duration::from_secs(self.ctx.config.smtp.limits.command_timeout_seconds);
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                self.client = ClientState {
                    tls: true,
                    bad_commands: self.client.bad_commands,
                    ..ClientState::default()
                };
                self.envelope = Envelope::default();
                self.state = State::Command;
                Some(Box::new(tls))
            }
            Ok(Err(e)) => {
                tracing::info!(component = "smtp", session_id = %self.id, event = "tls_failed", error = %e, "TLS handshake failed");
                None
            }
            Err(_) => None,
        }
    }

    fn in_transaction(&self) -> bool {
        self.envelope.mail.is_some() || matches!(self.state, State::Data(_))
    }

    fn reply(&mut self, reply: Reply) {
        if let Some(m) = self.metrics {
            m.error_reply(reply.code);
        }
        reply.write_to(&mut self.out);
    }

    /// Handles every complete command (or the DATA body) in the buffer.
    async fn process_input(&mut self) -> Flow {
        let max_line = self.ctx.config.smtp.limits.max_line_length;
        loop {
            if let State::Data(incoming) = &mut self.state {
                let (consumed, done) = incoming.receiver.feed(&self.rbuf);
                self.rbuf.advance(consumed);
                if !done {
                    let limits = &self.ctx.config.smtp.limits;
                    incoming
                        .settle(
                            &self.ctx.limits,
                            self.client_key,
                            limits.data_memory_bytes,
                            limits.spool_dir.as_deref(),
                        )
                        .await;
                    return Flow::Continue;
                }
                let State::Data(incoming) = std::mem::replace(&mut self.state, State::Command)
                else {
                    unreachable!("state checked above");
                };
                let started = self.envelope.started;
                let span = self
                    .envelope
                    .span
                    .take()
                    .unwrap_or_else(tracing::Span::none);
                let reply = self.finish_data(*incoming).instrument(span.clone()).await;
                span.record("smtp.reply_code", reply.code);
                if let Some(m) = self.metrics {
                    m.transaction(reply.code, started);
                }
                self.reply(reply);
                continue;
            }
            // A PROXY header from a peer the listener does not trust (trusted ones are
            // read before the session starts): the header would name another client.
            if self.client.helo.is_none() && crate::proto::proxy::looks_like_header(&self.rbuf) {
                tracing::warn!(component = "smtp", session_id = %self.id, remote = %self.remote, listener = self.listener.name(), event = "proxy_header_refused", "PROXY header from an address that is not a trusted proxy");
                self.reply(reply::PROXY_REFUSED);
                return Flow::Close;
            }
            let (consumed, line) = match self.lines.next(&self.rbuf, max_line) {
                LineEvent::NeedMore { consumed } => {
                    self.rbuf.advance(consumed);
                    return Flow::Continue;
                }
                LineEvent::Line { consumed, line } => (consumed, Ok(line.to_vec())),
                LineEvent::Invalid { consumed, reply } => (consumed, Err(reply)),
            };
            self.rbuf.advance(consumed);
            let flow = match line {
                Ok(line) => self.on_line(&line).await,
                Err(reply) => {
                    if matches!(self.state, State::Auth(_)) {
                        self.state = State::Command;
                    }
                    self.refuse(reply)
                }
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
    }

    /// Sends a negative reply and counts it; too many end the session (SPEC M2).
    fn refuse(&mut self, reply: Reply) -> Flow {
        self.reply(reply);
        self.client.bad_commands += 1;
        if self.client.bad_commands >= self.ctx.config.smtp.limits.max_bad_commands {
            tracing::info!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "too_many_errors", "closing session after too many errors");
            self.reply(reply::TOO_MANY_ERRORS);
            return Flow::Close;
        }
        Flow::Continue
    }
}
