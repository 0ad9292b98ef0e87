//! One handler per SMTP verb (RFC 5321 §4.1.1) but AUTH ([`super::auth`]); the end of
//! DATA is [`super::finish`].

use tracing::Instrument;

use super::incoming::Incoming;
use super::{Envelope, Flow, ListenerKind, Session, State};
use crate::proto::command::{self, Command, MailFrom, RcptTo};
use crate::proto::data::DataReceiver;
use crate::proto::reply;
use crate::submission::SubmitError;
use crate::trace;

impl Session {
    pub(super) async fn on_line(&mut self, line: &[u8]) -> Flow {
        if let State::Auth(step) = std::mem::replace(&mut self.state, State::Command) {
            return self.on_auth_response(step, line).await;
        }
        let command = match command::parse(line) {
            Ok(c) => c,
            Err(reply) => return self.refuse(reply),
        };
        // Shutdown: a session without an open transaction is told to go away; one with
        // a transaction may finish it first (SPEC O11).
        if (self.draining || *self.shutdown.borrow() != crate::shutdown::Phase::Running)
            && !self.in_transaction()
            && command != Command::Quit
        {
            self.reply(reply::SHUTTING_DOWN);
            return Flow::Close;
        }
        match command {
            Command::Ehlo(domain) => self.ehlo(domain, true),
            Command::Helo(domain) => self.ehlo(domain, false),
            Command::Mail(mail) => self.mail(mail),
            Command::Rcpt(rcpt) => self.rcpt(rcpt).await,
            Command::Data => self.data(),
            Command::Rset => {
                self.envelope = Envelope::default();
                self.reply(reply::RESET_OK);
                Flow::Continue
            }
            Command::Noop => {
                self.reply(reply::NOOP_OK);
                Flow::Continue
            }
            Command::Quit => {
                self.reply(reply::BYE);
                Flow::Close
            }
            Command::Vrfy => {
                self.reply(reply::CANNOT_VRFY);
                Flow::Continue
            }
            Command::Help => {
                self.reply(reply::HELP);
                Flow::Continue
            }
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await,
        }
    }

    /// AUTH is offered on this listener at all: not on `inbound` (port 25, where the
    /// password guessers are) unless `smtp.auth_on_inbound`.
    pub(super) fn auth_on_listener(&self) -> bool {
        self.listener != ListenerKind::Inbound || self.ctx.config.smtp.auth_on_inbound
    }

    pub(super) fn auth_offered(&self) -> bool {
        self.auth_on_listener() && (self.client.tls || self.ctx.config.smtp.allow_plaintext_auth)
    }

    /// EHLO/HELO (§4.1.1.1): resets the transaction and lists the extensions.
    fn ehlo(&mut self, domain: String, esmtp: bool) -> Flow {
        self.envelope = Envelope::default();
        let hostname = &self.ctx.config.server.hostname;
        let text = if esmtp {
            let mut lines = vec![
                format!("{hostname} Hello {domain} [{}]", self.remote.ip()),
                "PIPELINING".to_string(),
                format!("SIZE {}", self.ctx.config.smtp.limits.max_message_size),
                "8BITMIME".to_string(),
                "ENHANCEDSTATUSCODES".to_string(),
                "SMTPUTF8".to_string(),
            ];
            if self.ctx.tls.is_some() && !self.client.tls {
                lines.push("STARTTLS".to_string());
            }
            if self.auth_offered() {
                lines.push("AUTH PLAIN LOGIN".to_string());
            }
            lines
        } else {
            vec![format!("{hostname} Hello {domain}")]
        };
        self.client.helo = Some(domain);
        self.client.esmtp = esmtp;
        self.reply(reply::hello(&text));
        Flow::Continue
    }

    /// MAIL FROM (§4.1.1.2) with SIZE (RFC 1870) and the submission policy (SPEC M3).
    fn mail(&mut self, mail: MailFrom) -> Flow {
        if self.client.helo.is_none() {
            return self.refuse(reply::BAD_SEQUENCE_HELO);
        }
        if self.envelope.mail.is_some() {
            return self.refuse(reply::BAD_SEQUENCE_MAIL);
        }
        if self.listener.requires_auth() && self.client.authenticated.is_none() {
            return self.refuse(reply::AUTH_REQUIRED);
        }
        let pipeline = &self.ctx.pipeline;
        let admitted = pipeline
            .accepting()
            .and_then(|()| pipeline.check_size(mail.size.unwrap_or(0)));
        if let Err(e) = admitted {
            self.reply(Self::reply_for(&e));
            return Flow::Continue;
        }
        if let Some(submitter) = &self.client.authenticated
            && let Err(e) = pipeline.check_envelope(submitter, mail.sender.as_ref())
        {
            let reply = self.refused(&e, None);
            return self.refuse(reply);
        }
        self.envelope.mail = Some(mail);
        self.envelope.started = Some(std::time::Instant::now());
        // One trace per transaction (SPEC O2): MAIL FROM to the reply after DATA, when
        // sampled; otherwise a span the trace export ignores (it gives logs the session).
        self.envelope.span = Some(if trace::sample(&self.ctx.config.telemetry.tracing) {
            tracing::info_span!(
                "smtp.transaction",
                otel.kind = "server",
                sampling.priority = 1,
                listener = self.listener.name(),
                session_id = %self.id,
                smtp.reply_code = tracing::field::Empty,
            )
        } else {
            tracing::info_span!(
                target: trace::UNTRACED,
                "smtp.transaction",
                listener = self.listener.name(),
                session_id = %self.id,
            )
        });
        self.reply(reply::SENDER_OK);
        Flow::Continue
    }

    /// RCPT TO (§4.1.1.3): the pipeline's recipient policy, with relaying only for
    /// authenticated clients (SPEC M3): never an open relay.
    async fn rcpt(&mut self, rcpt: RcptTo) -> Flow {
        let Some(mail) = &self.envelope.mail else {
            return self.refuse(reply::BAD_SEQUENCE_NEED_MAIL);
        };
        if !rcpt.recipient.is_ascii() && !mail.smtputf8 {
            return self.refuse(reply::SMTPUTF8_REQUIRED);
        }
        let may_relay = self.client.authenticated.is_some();
        let span = self
            .envelope
            .span
            .clone()
            .unwrap_or_else(tracing::Span::none);
        let added = self
            .ctx
            .pipeline
            .add_recipient(&mut self.envelope.recipients, rcpt.recipient, may_relay)
            .instrument(span)
            .await;
        match added {
            Ok(()) => {
                self.reply(reply::RECIPIENT_OK);
                Flow::Continue
            }
            // Not a protocol error: neither counts as a bad command. Only the lookup
            // failure is logged; a client going on past the limit gets 452 silently.
            Err(e @ SubmitError::TooManyRecipients { .. }) => {
                self.reply(Self::reply_for(&e));
                Flow::Continue
            }
            Err(e) if e.is_temporary() => {
                let reply = self.refused(&e, None);
                self.reply(reply);
                Flow::Continue
            }
            Err(e) => {
                if let SubmitError::RelayDenied(_) = e {
                    tracing::info!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "relay_denied", "relay attempt refused");
                }
                self.refuse(Self::reply_for(&e))
            }
        }
    }

    /// DATA (§4.1.1.4): switch to the body receiver after 354.
    fn data(&mut self) -> Flow {
        if self.envelope.mail.is_none() {
            return self.refuse(reply::BAD_SEQUENCE_NEED_MAIL);
        }
        if self.envelope.recipients.is_empty() {
            return self.refuse(reply::BAD_SEQUENCE_NEED_RCPT);
        }
        if !self.ctx.pipeline.health.accepting_mail() {
            self.reply(reply::TEMPFAIL_SYSTEM);
            return Flow::Continue;
        }
        let limits = &self.ctx.config.smtp.limits;
        self.state = State::Data(Box::new(Incoming::new(DataReceiver::new(
            limits.max_message_size,
            limits.max_line_length,
        ))));
        self.reply(reply::START_DATA);
        Flow::Continue
    }

    /// STARTTLS (RFC 3207).
    fn starttls(&mut self) -> Flow {
        if self.client.tls {
            return self.refuse(reply::ALREADY_TLS);
        }
        if self.ctx.tls.is_none() {
            self.reply(reply::TLS_UNAVAILABLE);
            return Flow::Continue;
        }
        self.reply(reply::READY_TLS);
        Flow::StartTls
    }
}
