//! AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN, offered only over TLS unless configured
//! otherwise, and every password check within the node's bounds (SPEC M2): lockouts,
//! a limited number of checks at once, a growing delay after each failure.

use super::{AuthStep, Flow, Session, State};
use crate::accounts;
use crate::audit::Entry;
use crate::limits::{self, Admission, Limit};
use crate::proto::auth::{self, Credentials};
use crate::proto::reply;
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
        let user = match self.ctx.pipeline.directory.user(&key).await {
            Ok(user) => user,
            Err(e) => {
                guards.auth.busy(self.client_key);
                tracing::warn!(component = "smtp", session_id = %self.id, event = "auth_lookup_failed", error = %e, "user lookup failed");
                self.ctx.pipeline.directory_failed();
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

/// An argon2id hash of a random password, verified against for unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Xq5Ux3ZF3bw3d3C6VNaF0VvN8mP3CMCh0X3QqK1Wd4o";
