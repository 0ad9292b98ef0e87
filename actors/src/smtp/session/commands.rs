//! One handler per SMTP verb (RFC 5321 §4.1.1), plus AUTH (RFC 4954) and the end of DATA.

use std::time::Duration;

use tracing::Instrument;

use super::incoming::Incoming;
use super::{AuthStep, Envelope, Flow, ListenerKind, Session, State};
use crate::accounts::{self, RecipientLookup};
use crate::audit::Entry;
use crate::config::HookEvent;
use crate::health_state::{Dependency, DependencyFailed};
use crate::hooks::Verdict;
use crate::limits::{self, Admission, Limit};
use crate::smtp::proto::auth::{self, Credentials};
use crate::smtp::proto::command::{self, Command, MailFrom, RcptTo};
use crate::smtp::proto::data::DataReceiver;
use crate::smtp::proto::reply::{self, Reply};
use crate::storage::{IncomingMessage, StoreMessage};
use crate::submission::{self, Refusal, Submitter};
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
    fn auth_on_listener(&self) -> bool {
        self.listener != ListenerKind::Inbound || self.ctx.config.smtp.auth_on_inbound
    }

    fn auth_offered(&self) -> bool {
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
            lines.join("\n")
        } else {
            format!("{hostname} Hello {domain}")
        };
        self.client.helo = Some(domain);
        self.client.esmtp = esmtp;
        self.reply(Reply::plain(250, text));
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
        if !self.ctx.health.accepting_mail() {
            self.reply(reply::TEMPFAIL_SYSTEM);
            return Flow::Continue;
        }
        if self.ctx.health.storage_full() {
            self.reply(reply::STORAGE_FULL);
            return Flow::Continue;
        }
        if mail
            .size
            .is_some_and(|s| s > self.ctx.config.smtp.limits.max_message_size as u64)
        {
            self.reply(reply::MESSAGE_TOO_BIG);
            return Flow::Continue;
        }
        if let Some(submitter) = &self.client.authenticated
            && let Err(refusal) =
                submitter.check_envelope(self.submission_policy(), mail.sender.as_ref())
        {
            let reply = self.sender_refused(&refusal);
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

    /// RCPT TO (§4.1.1.3): local users from anyone, other domains only from authenticated
    /// clients (SPEC M3): never an open relay.
    async fn rcpt(&mut self, rcpt: RcptTo) -> Flow {
        let Some(mail) = &self.envelope.mail else {
            return self.refuse(reply::BAD_SEQUENCE_NEED_MAIL);
        };
        if !rcpt.recipient.is_ascii() && !mail.smtputf8 {
            return self.refuse(reply::SMTPUTF8_REQUIRED);
        }
        if self.envelope.rcpt_count >= self.ctx.config.smtp.limits.max_recipients {
            self.reply(reply::TOO_MANY_RECIPIENTS);
            return Flow::Continue;
        }
        let lookup = accounts::lookup_recipient(&self.ctx.db, &rcpt.recipient);
        let lookup = match &self.envelope.span {
            Some(txn) if trace::traced(txn) => {
                lookup
                    .instrument(tracing::info_span!(parent: txn, "db.lookup_recipient"))
                    .await
            }
            _ => lookup.await,
        };
        match lookup {
            Ok(RecipientLookup::Local(local)) => {
                self.envelope.rcpt_count += 1;
                if !self
                    .envelope
                    .recipients
                    .iter()
                    .any(|r| r.user_id == local.user_id)
                {
                    self.envelope.recipients.push(local);
                }
                self.reply(reply::RECIPIENT_OK);
                Flow::Continue
            }
            Ok(RecipientLookup::UnknownUser) => self.refuse(reply::NO_SUCH_USER),
            Ok(RecipientLookup::Remote) if self.client.authenticated.is_some() => {
                // Authenticated submission may send anywhere: the outbound queue.
                self.envelope.rcpt_count += 1;
                let key = rcpt.recipient.key();
                if !self.envelope.outbound.iter().any(|a| a.key() == key) {
                    self.envelope.outbound.push(rcpt.recipient);
                }
                self.reply(reply::RECIPIENT_OK);
                Flow::Continue
            }
            Ok(RecipientLookup::Remote) => {
                tracing::info!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "relay_denied", "relay attempt refused");
                self.refuse(reply::RELAY_DENIED)
            }
            Err(e) => {
                tracing::warn!(component = "smtp", session_id = %self.id, error = %e, "recipient lookup failed");
                self.ctx
                    .health_monitor
                    .do_send(DependencyFailed(Dependency::Database));
                self.reply(reply::TEMPFAIL_SYSTEM);
                Flow::Continue
            }
        }
    }

    /// DATA (§4.1.1.4): switch to the body receiver after 354.
    fn data(&mut self) -> Flow {
        if self.envelope.mail.is_none() {
            return self.refuse(reply::BAD_SEQUENCE_NEED_MAIL);
        }
        if self.envelope.recipients.is_empty() && self.envelope.outbound.is_empty() {
            return self.refuse(reply::BAD_SEQUENCE_NEED_RCPT);
        }
        if !self.ctx.health.accepting_mail() {
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

    /// The body is complete: store it durably, then answer (SPEC M4).
    pub(super) async fn finish_data(&mut self, incoming: Incoming) -> Reply {
        let envelope = std::mem::take(&mut self.envelope);
        let id = uuid::Uuid::now_v7().to_string();
        let header = self.received_header(&id, &envelope).into_bytes();
        let hooks = self.ctx.hooks.clone();
        // A pre_receive or pre_send call holds the body's base64 form, the JSON request
        // and the request's own copy beside the body: about four times its size.
        let copies = if hooks.has(HookEvent::PreReceive)
            || (!envelope.outbound.is_empty() && hooks.has(HookEvent::PreSend))
        {
            4
        } else {
            1
        };
        let wait = Duration::from_secs(self.ctx.config.smtp.limits.data_timeout_seconds);
        let body = match incoming
            .finish(header, &self.ctx.limits, copies, wait)
            .await
        {
            Ok(body) => body,
            Err(reply) => {
                tracing::info!(component = "smtp", session_id = %self.id, event = "message_refused", reply = %reply, "message refused");
                return reply;
            }
        };
        if !self.ctx.health.accepting_mail() {
            return reply::TEMPFAIL_SYSTEM;
        }
        if let Some(submitter) = &self.client.authenticated
            && let Err(refusal) = submitter.check_from_header(self.submission_policy(), &body.bytes)
        {
            return self.sender_refused(&refusal);
        }
        let sender = envelope
            .mail
            .as_ref()
            .and_then(|m| m.sender.as_ref())
            .map(|a| a.to_string())
            .unwrap_or_default();
        // Held until the message is stored: the body's bytes count in the budget.
        let _reservation = body.reservation;
        let stored = body.bytes;
        let mut message = IncomingMessage::new(
            id.clone(),
            stored,
            sender,
            envelope.recipients,
            self.listener.name(),
            self.remote.ip(),
            envelope.outbound,
        );
        message.submitted_by = self
            .client
            .authenticated
            .as_ref()
            .map(|s| s.account().to_string());
        let mut verdicts = Vec::new();
        if hooks.has(HookEvent::PreReceive) {
            verdicts.push(hooks.pre_receive(&message).await);
        }
        if !message.outbound.is_empty() && hooks.has(HookEvent::PreSend) {
            verdicts.push(hooks.pre_send(&message).await);
        }
        for verdict in verdicts {
            match verdict {
                Verdict::Allow { tags } => message.tags.extend(tags),
                Verdict::Reject(text) => {
                    tracing::info!(component = "smtp", session_id = %self.id, event = "message_rejected_by_hook", id = %id, "message rejected by a hook");
                    return Reply::dynamic(
                        550,
                        "5.7.1",
                        or_default(text, "message refused by policy"),
                    );
                }
                Verdict::Tempfail(text) => {
                    tracing::info!(component = "smtp", session_id = %self.id, event = "message_tempfailed_by_hook", id = %id, "message deferred by a hook");
                    return Reply::dynamic(451, "4.7.1", or_default(text, "try again later"));
                }
            }
        }
        let size = message.body.len();
        let message_id = message.meta.message_id.clone().unwrap_or_default();
        let told = hooks.has(HookEvent::PostReceive).then(|| message.clone());
        let span = trace::child_span(|| tracing::info_span!("storage.store", size));
        let request = span.in_scope(|| StoreMessage::new(message));
        match self.ctx.storage.send(request).instrument(span).await {
            Ok(Ok(())) => {
                if let Some(stored) = told {
                    hooks.post_receive(&stored);
                }
                let submitted_by = self.client.authenticated.as_ref().map(|s| s.account());
                tracing::info!(component = "smtp", session_id = %self.id, event = "message_stored", id = %id, size, message_id = %message_id, submitted_by, "message stored");
                Reply::dynamic(250, "2.0.0", format!("OK queued as {id}"))
            }
            Ok(Err(e)) => {
                tracing::warn!(component = "smtp", session_id = %self.id, event = "message_tempfail", error = %e, "message not stored");
                reply::TEMPFAIL_SYSTEM
            }
            Err(e) => {
                tracing::error!(component = "smtp", session_id = %self.id, error = %e, "storage actor unreachable");
                reply::TEMPFAIL_SYSTEM
            }
        }
    }

    /// The trace header of RFC 5321 §4.4.
    fn received_header(&self, id: &str, envelope: &Envelope) -> String {
        let protocol = match (
            self.client.esmtp,
            self.client.tls,
            &self.client.authenticated,
        ) {
            (false, _, _) => "SMTP",
            (true, false, None) => "ESMTP",
            (true, true, None) => "ESMTPS",
            (true, false, Some(_)) => "ESMTPA",
            (true, true, Some(_)) => "ESMTPSA",
        };
        let helo: String = self
            .client
            .helo
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let for_clause = match (envelope.recipients.as_slice(), envelope.outbound.as_slice()) {
            ([one], []) => format!("\r\n\tfor <{}>", one.address),
            ([], [one]) => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        // The account in a comment before `by` (CFWS, RFC 5321 §4.4), as Postfix does.
        let account = match &self.client.authenticated {
            Some(s) => format!(
                " (authenticated as {})",
                submission::comment_text(s.account())
            ),
            None => String::new(),
        };
        format!(
            "Received: from {helo} ([{ip}]){account}\r\n\tby {host} (MaiRust) with {protocol} id {id}{for_clause};\r\n\t{date}\r\n",
            ip = self.remote.ip(),
            host = self.ctx.config.server.hostname,
            date = chrono::Utc::now().to_rfc2822(),
        )
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

    /// AUTH (RFC 4954 §4): PLAIN and LOGIN, only over TLS unless configured otherwise.
    async fn auth(&mut self, mechanism: String, initial: Option<String>) -> Flow {
        if self.client.helo.is_none() {
            return self.refuse(reply::BAD_SEQUENCE_HELO);
        }
        if self.client.authenticated.is_some() {
            return self.refuse(reply::ALREADY_AUTHENTICATED);
        }
        if self.envelope.mail.is_some() {
            return self.refuse(reply::AUTH_IN_TRANSACTION);
        }
        if !self.auth_on_listener() {
            return self.refuse(reply::AUTH_NOT_OFFERED);
        }
        if !self.auth_offered() {
            return self.refuse(reply::ENCRYPTION_REQUIRED);
        }
        match (mechanism.as_str(), initial) {
            ("PLAIN", Some(initial)) => self.auth_plain(&initial).await,
            ("PLAIN", None) => {
                self.state = State::Auth(AuthStep::PlainResponse);
                self.reply(Reply::plain(334, ""));
                Flow::Continue
            }
            ("LOGIN", Some(initial)) => {
                match auth::decode_response(&initial).and_then(auth::decode_text) {
                    Ok(username) => {
                        self.state = State::Auth(AuthStep::LoginPassword(username));
                        self.reply(Reply::plain(334, auth::LOGIN_PASSWORD_CHALLENGE));
                        Flow::Continue
                    }
                    Err(reply) => self.refuse(reply),
                }
            }
            ("LOGIN", None) => {
                self.state = State::Auth(AuthStep::LoginUsername);
                self.reply(Reply::plain(334, auth::LOGIN_USERNAME_CHALLENGE));
                Flow::Continue
            }
            _ => self.refuse(reply::AUTH_MECHANISM_UNSUPPORTED),
        }
    }

    async fn on_auth_response(&mut self, step: AuthStep, line: &[u8]) -> Flow {
        let Ok(line) = std::str::from_utf8(line) else {
            return self.refuse(reply::INVALID_BASE64);
        };
        match step {
            AuthStep::PlainResponse => self.auth_plain(line).await,
            AuthStep::LoginUsername => {
                match auth::decode_response(line).and_then(auth::decode_text) {
                    Ok(username) => {
                        self.state = State::Auth(AuthStep::LoginPassword(username));
                        self.reply(Reply::plain(334, auth::LOGIN_PASSWORD_CHALLENGE));
                        Flow::Continue
                    }
                    Err(reply) => self.refuse(reply),
                }
            }
            AuthStep::LoginPassword(username) => {
                match auth::decode_response(line).and_then(auth::decode_text) {
                    Ok(password) => self.verify(Credentials { username, password }).await,
                    Err(reply) => self.refuse(reply),
                }
            }
        }
    }

    async fn auth_plain(&mut self, response: &str) -> Flow {
        match auth::decode_response(response).and_then(|r| auth::decode_plain(&r)) {
            Ok(credentials) => self.verify(credentials).await,
            Err(reply) => self.refuse(reply),
        }
    }

    /// Checks a password (RFC 4954 §4) within the node's bounds: a locked-out address
    /// or account, or no free password-check slot, gets 454 4.7.0 without any work; a
    /// failure is counted across connections and answered after a growing delay.
    async fn verify(&mut self, credentials: Credentials) -> Flow {
        let key = credentials.username.trim().to_lowercase();
        let guards = self.ctx.limits.clone();
        if let Admission::Locked { what, .. } = guards.auth.admit(self.client_key, &key) {
            limits::hit(Limit::AuthLocked);
            tracing::debug!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "auth_locked", locked = ?what, "AUTH refused during a lockout");
            return self.refuse(reply::AUTH_LOCKED);
        }
        let known = guards.auth.known(self.client_key, &key);
        let Ok(slot) = guards.password.slot(known, self.client_key).await else {
            guards.auth.busy(self.client_key);
            tracing::debug!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "auth_busy", "no password-check slot free");
            return self.refuse(reply::AUTH_BUSY);
        };
        // A lockout may have begun while this attempt waited for its slot.
        if let Admission::Locked { what, .. } = guards.auth.admit(self.client_key, &key) {
            drop(slot);
            limits::hit(Limit::AuthLocked);
            tracing::debug!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "auth_locked", locked = ?what, "AUTH refused during a lockout");
            return self.refuse(reply::AUTH_LOCKED);
        }
        let user = match accounts::find_user(&self.ctx.db, &key).await {
            Ok(user) => user,
            Err(e) => {
                guards.auth.busy(self.client_key);
                tracing::warn!(component = "smtp", session_id = %self.id, event = "auth_lookup_failed", error = %e, "user lookup failed");
                self.ctx
                    .health_monitor
                    .do_send(DependencyFailed(Dependency::Database));
                self.reply(reply::AUTH_TEMPFAIL);
                return Flow::Continue;
            }
        };
        // Hash even for unknown users so timing does not tell which addresses exist.
        let (phc, enabled) = match &user {
            Some(u) => (u.password_hash.clone(), !u.disabled),
            None => (DUMMY_HASH.to_string(), false),
        };
        let password = credentials.password;
        let Ok(ok) = slot
            .run(move || accounts::verify_password(&password, &phc))
            .await
        else {
            guards.auth.busy(self.client_key);
            self.reply(reply::AUTH_TEMPFAIL);
            return Flow::Continue;
        };
        if ok
            && enabled
            && let Some(user) = &user
        {
            tracing::info!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "auth_success", user = %key, "authenticated");
            guards.auth.succeeded(self.client_key, &key);
            self.ctx
                .audit
                .spawn(self.login_entry(Entry::success("auth.login", format!("smtp:{key}"))));
            if let Some(m) = self.metrics {
                m.auth(true);
            }
            self.client.authenticated = Some(Submitter::for_user(user));
            self.reply(reply::AUTH_OK);
            return Flow::Continue;
        }
        if let Some(m) = self.metrics {
            m.auth(false);
        }
        let failure = guards.auth.failed(self.client_key, &key);
        let reason = match &user {
            None => "unknown user",
            Some(_) if !enabled => "user disabled",
            Some(_) => "wrong password",
        };
        // The first failure of an address in a summary period is logged and audited on
        // its own; the rest go into the periodic summary (limits::throttle).
        if failure.audit_now {
            tracing::warn!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "auth_failure", user = %key, reason, "authentication failed");
            self.ctx.audit.spawn(
                self.login_entry(Entry::failure("auth.login", format!("smtp:{key}")))
                    .detail("reason", reason),
            );
        } else {
            tracing::debug!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "auth_failure", user = %key, reason, "authentication failed");
        }
        for (locked, what, target) in [
            (
                failure.locked_address,
                "address",
                self.client_key.to_string(),
            ),
            (failure.locked_account, "account", key.clone()),
        ] {
            if locked {
                let lockout = self.ctx.config.auth.lockout_seconds;
                tracing::warn!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "auth_lockout", locked = what, target = %target, lockout_seconds = lockout, "too many failed authentications: locked out");
                self.ctx.audit.spawn(
                    self.login_entry(Entry::failure("auth.lockout", format!("smtp:{key}")))
                        .target(format!("{what}:{target}"))
                        .detail("lockout_seconds", lockout),
                );
            }
        }
        // Slow guessing down without holding a thread; the delay grows per failure.
        tokio::time::sleep(failure.delay).await;
        self.refuse(reply::AUTH_FAILED)
    }
}

impl Session {
    fn submission_policy(&self) -> submission::Policy {
        submission::Policy::from_config(&self.ctx.config.smtp)
    }

    /// Logs and audits a sender the authenticated account may not use, and names the
    /// reply: 553 5.7.1 at MAIL FROM, 550 5.7.1 at the end of DATA (see `reply`).
    fn sender_refused(&self, refusal: &Refusal) -> Reply {
        let account = self
            .client
            .authenticated
            .as_ref()
            .map_or("", |s| s.account());
        tracing::info!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "sender_refused", user = %account, reason = refusal.reason(), address = refusal.address(), "sender refused for the authenticated account");
        self.ctx.audit.spawn(
            self.login_entry(Entry::failure(
                "submission.sender_refused",
                format!("smtp:{account}"),
            ))
            .detail("reason", refusal.reason())
            .detail("address", refusal.address()),
        );
        match refusal {
            Refusal::NullSender => reply::NULL_SENDER_REFUSED,
            Refusal::EnvelopeSender(_) => reply::SENDER_NOT_OWNED,
            Refusal::NoFromAddress => reply::FROM_HEADER_MISSING,
            Refusal::SeveralFromHeaders => reply::FROM_HEADER_REPEATED,
            Refusal::FromAddress(_) => reply::FROM_HEADER_NOT_OWNED,
        }
    }

    fn login_entry(&self, entry: Entry) -> Entry {
        entry
            .remote(self.remote.ip())
            .detail("listener", self.listener.name())
            .detail("session_id", self.id.to_string())
    }
}

/// A hook's reply text, single-line and bounded, or `default` when it gave none.
fn or_default(text: String, default: &str) -> String {
    let text = crate::proto::text::sanitize(text.trim());
    if text.is_empty() {
        default.to_string()
    } else {
        text
    }
}

/// An argon2id hash of a random password, verified against for unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Xq5Ux3ZF3bw3d3C6VNaF0VvN8mP3CMCh0X3QqK1Wd4o";
