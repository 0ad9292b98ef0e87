//! One SMTP session: a state machine driven by bytes from any stream.
//!
//! The session keeps what the client said (the [`Envelope`]) apart from what it may do
//! ([`ClientState`]: HELO, TLS, authenticated user, error count). It is generic over the
//! stream (plain TCP, TLS, or an in-memory pipe in tests) and does its own buffering:
//! replies to pipelined commands (RFC 2920) are collected and written in one go before
//! the session waits for more input.
//!
//! - [`commands`] — one handler per SMTP verb
//! - [`incoming`] — a DATA body on its way in: memory budget, spooling to disk
//! - [`actor`] — the SmtpSession actor that owns a session and its connection
//!
//! Every wait on the client is bounded (SPEC M2, hostile clients): reads by the command
//! or DATA timeout, DATA as a whole by a minimum rate, every write by
//! `write_timeout_seconds`, and the whole session by `max_session_seconds`.

pub mod actor;
mod commands;
mod incoming;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, Recipient};
use bytes::{Buf, BytesMut};
use sea_orm::DatabaseConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::proto::command::MailFrom;
use super::proto::line::{LineEvent, LineReader};
use super::proto::reply::{self, Reply};
use crate::accounts::LocalRecipient;
use crate::config::Config;
use crate::health_state::{DependencyFailed, HealthState};
use crate::limits::{self, Limit, NodeLimits};
use crate::metrics::SmtpMetrics;
use crate::net::{BoxStream, ListenerKind};
use crate::shutdown::Phase;
use crate::storage::StorageActor;
use crate::submission::Submitter;

/// What every session on every listener shares.
pub struct SessionContext {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub storage: Addr<StorageActor>,
    pub health: Arc<HealthState>,
    pub health_monitor: Recipient<DependencyFailed>,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: watch::Receiver<Phase>,
    pub hooks: Arc<crate::hooks::HookDispatcher>,
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
    recipients: Vec<LocalRecipient>,
    /// Remote recipients of an authenticated client: they go to the outbound queue.
    outbound: Vec<super::proto::command::Address>,
    /// Accepted RCPTs, duplicates included, for the recipients limit.
    rcpt_count: usize,
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

enum ReadOutcome {
    Data,
    Eof,
    Timeout(Deadline),
    Shutdown(Phase),
    Error(std::io::Error),
}

/// Which bound ended a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The command or DATA timeout: the client said nothing for too long.
    Idle,
    /// DATA arrived slower than the minimum rate.
    DataRate,
    /// The session's lifetime is over.
    Lifetime,
}

impl Deadline {
    fn reply(self) -> Reply {
        match self {
            Deadline::Idle => reply::TIMEOUT,
            Deadline::DataRate => reply::DATA_TOO_SLOW,
            Deadline::Lifetime => reply::SESSION_TOO_LONG,
        }
    }
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
        let greeting = format!("{} ESMTP MaiRust", self.ctx.config.server.hostname);
        self.reply(Reply::plain(220, greeting));
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

    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.ctx.config.smtp.limits.write_timeout_seconds)
    }

    /// Writes the collected replies; a client that does not take them within
    /// `write_timeout_seconds` (its receive window stays full) ends the session.
    async fn flush(&mut self, stream: &mut BoxStream) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout(), write).await {
            Ok(result) => result?,
            Err(_) => {
                limits::hit(Limit::WriteTimeout);
                tracing::info!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "write_timeout", "client does not read its replies; closing");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client did not read its replies",
                ));
            }
        }
        self.out.clear();
        Ok(())
    }

    /// How long the next read may wait, and which bound that is: the idle timeout of
    /// the phase, the DATA minimum rate (after a first `data_timeout_seconds` of grace,
    /// the body must average `data_min_rate_bytes_per_second`), and the session's
    /// lifetime, whichever ends first.
    fn read_deadline(&self) -> (Duration, Deadline) {
        let limits = &self.ctx.config.smtp.limits;
        let mut bound = match &self.state {
            State::Data(_) => (
                Duration::from_secs(limits.data_timeout_seconds),
                Deadline::Idle,
            ),
            _ => (
                Duration::from_secs(limits.command_timeout_seconds),
                Deadline::Idle,
            ),
        };
        if let State::Data(incoming) = &self.state
            && limits.data_min_rate_bytes_per_second > 0
        {
            let earned = Duration::try_from_secs_f64(
                incoming.bytes_in as f64 / limits.data_min_rate_bytes_per_second as f64,
            )
            .unwrap_or(Duration::MAX);
            let allowed = Duration::from_secs(limits.data_timeout_seconds).saturating_add(earned);
            let left = allowed.saturating_sub(incoming.started.elapsed());
            if left < bound.0 {
                bound = (left, Deadline::DataRate);
            }
        }
        let lifetime =
            Duration::from_secs(limits.max_session_seconds).saturating_sub(self.started.elapsed());
        if lifetime < bound.0 {
            bound = (lifetime, Deadline::Lifetime);
        }
        bound
    }

    async fn read_more(&mut self, stream: &mut BoxStream) -> ReadOutcome {
        let (timeout, deadline) = self.read_deadline();
        // A timeout polls the read first: with bytes always waiting (a client that never
        // stops sending) a deadline already passed would never fire.
        if timeout.is_zero() {
            return ReadOutcome::Timeout(deadline);
        }
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(8192);
        }
        tokio::select! {
            read = tokio::time::timeout(timeout, stream.read_buf(&mut self.rbuf)) => match read {
                Ok(Ok(0)) => ReadOutcome::Eof,
                Ok(Ok(n)) => {
                    if let State::Data(incoming) = &mut self.state {
                        incoming.bytes_in += n as u64;
                    }
                    ReadOutcome::Data
                }
                Ok(Err(e)) => ReadOutcome::Error(e),
                Err(_) => ReadOutcome::Timeout(deadline),
            },
            changed = self.shutdown.changed() => {
                match changed {
                    Ok(()) => ReadOutcome::Shutdown(*self.shutdown.borrow_and_update()),
                    Err(_) => ReadOutcome::Shutdown(Phase::Closing),
                }
            }
        }
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
