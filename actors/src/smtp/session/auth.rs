//! AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN, offered only over TLS unless configured
//! otherwise, and every password check within the node's bounds (SPEC M2): lockouts,
//! a limited number of checks at once, a growing delay after each failure.

use super::{AuthStep, Flow, Session, State};
use crate::audit::Entry;
use crate::proto::auth::{self, Credentials};
use crate::proto::reply;
use crate::signin::{Channel, Checked, SignIn};
use crate::submission::Submitter;

impl Session {
    /// AUTH (RFC 4954 §4): PLAIN and LOGIN, only over TLS unless configured otherwise.
    pub(super) async fn auth(&mut self, mechanism: String, initial: Option<String>) -> Flow {
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
                self.reply(reply::AUTH_PLAIN_CHALLENGE);
                Flow::Continue
            }
            ("LOGIN", Some(initial)) => {
                match auth::decode_response(&initial).and_then(auth::decode_text) {
                    Ok(username) => {
                        self.state = State::Auth(AuthStep::LoginPassword(username));
                        self.reply(reply::AUTH_LOGIN_PASSWORD);
                        Flow::Continue
                    }
                    Err(reply) => self.refuse(reply),
                }
            }
            ("LOGIN", None) => {
                self.state = State::Auth(AuthStep::LoginUsername);
                self.reply(reply::AUTH_LOGIN_USERNAME);
                Flow::Continue
            }
            _ => self.refuse(reply::AUTH_MECHANISM_UNSUPPORTED),
        }
    }

    pub(super) async fn on_auth_response(&mut self, step: AuthStep, line: &[u8]) -> Flow {
        let Ok(line) = std::str::from_utf8(line) else {
            return self.refuse(reply::INVALID_BASE64);
        };
        match step {
            AuthStep::PlainResponse => self.auth_plain(line).await,
            AuthStep::LoginUsername => {
                match auth::decode_response(line).and_then(auth::decode_text) {
                    Ok(username) => {
                        self.state = State::Auth(AuthStep::LoginPassword(username));
                        self.reply(reply::AUTH_LOGIN_PASSWORD);
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

    /// Checks a password (RFC 4954 §4) within the node's bounds ([`SignIn`]): a
    /// locked-out address or account, or no free password-check slot, gets 454 4.7.0
    /// without any work; a failure is answered after a growing delay.
    async fn verify(&mut self, credentials: Credentials) -> Flow {
        let listener = self.listener.name();
        let session_id = self.id.to_string();
        let decorate = |entry: Entry| {
            entry
                .detail("listener", listener)
                .detail("session_id", session_id.clone())
        };
        let checked = SignIn {
            limits: &self.ctx.limits,
            pipeline: &self.ctx.pipeline,
            audit: &self.ctx.audit,
            lockout_seconds: self.ctx.config.auth.lockout_seconds,
            channel: Channel::Smtp,
            remote: self.remote.ip(),
            decorate: &decorate,
            session_id: &session_id,
        }
        .check(&credentials.username, credentials.password)
        .await;
        match checked {
            Checked::Verified(user) => {
                if let Some(m) = self.metrics {
                    m.auth(true);
                }
                self.client.authenticated = Some(Submitter::for_user(&user));
                self.reply(reply::AUTH_OK);
                Flow::Continue
            }
            Checked::Locked => self.refuse(reply::AUTH_LOCKED),
            Checked::Busy => self.refuse(reply::AUTH_BUSY),
            Checked::Unavailable => {
                self.reply(reply::AUTH_TEMPFAIL);
                Flow::Continue
            }
            Checked::Refused => {
                if let Some(m) = self.metrics {
                    m.auth(false);
                }
                self.refuse(reply::AUTH_FAILED)
            }
        }
    }
}
