//! One password check for every way a person signs in: SMTP AUTH and the web sign-in
//! of the Admin UI. Both share the node's bounds (SPEC M2): lockouts per client address
//! and per account (so guessing over SMTP locks the web sign-in too, and the other way
//! round), a limited number of password hashes at once, a growing delay after each
//! failure, the same hashing work for unknown users as for known ones, and audit
//! entries (`auth.login`, `auth.lockout`) with the first failure of an address in a
//! summary period on its own.

use std::net::IpAddr;

use mairust_entities::user;

use crate::accounts;
use crate::audit::{AuditLog, Entry};
use crate::limits::{self, Admission, Limit, NodeLimits};
use crate::submission::Pipeline;

/// Where a sign-in comes from: names the audit actor (`smtp:ADDRESS`, `web:ADDRESS`)
/// and the log component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Smtp,
    Web,
}

impl Channel {
    fn component(self) -> &'static str {
        match self {
            Channel::Smtp => "smtp",
            Channel::Web => "api",
        }
    }

    fn actor(self, account: &str) -> String {
        match self {
            Channel::Smtp => format!("smtp:{account}"),
            Channel::Web => format!("web:{account}"),
        }
    }
}

/// What a password check found.
#[derive(Debug)]
pub enum Checked {
    /// The password is right and the user enabled.
    Verified(Box<user::Model>),
    /// The client address or the account is locked out: nothing was checked.
    Locked,
    /// No password-check slot free: nothing was checked.
    Busy,
    /// The user could not be read (database down) or the check was lost: try later.
    Unavailable,
    /// Wrong password, unknown or disabled user; answered after the failure's delay.
    Refused,
}

/// One sign-in attempt's context.
pub struct SignIn<'a> {
    pub limits: &'a NodeLimits,
    pub pipeline: &'a Pipeline,
    pub audit: &'a std::sync::Arc<AuditLog>,
    /// `auth.lockout_seconds`, for the lockout's audit entry.
    pub lockout_seconds: u64,
    pub channel: Channel,
    /// The client's address (a trusted proxy's client, not the proxy).
    pub remote: IpAddr,
    /// Adds the channel's own details (listener, session id) to each audit entry.
    pub decorate: &'a (dyn Fn(Entry) -> Entry + Send + Sync),
    /// Extra log field naming the SMTP session (empty for the web).
    pub session_id: &'a str,
}

impl SignIn<'_> {
    /// Checks `password` for the account `username` (an address or login name, any
    /// case) within the node's bounds; a failure is answered after its delay.
    pub async fn check(&self, username: &str, password: String) -> Checked {
        let key = username.trim().to_lowercase();
        let component = self.channel.component();
        let client = self.limits.client(self.remote);
        let guards = self.limits;
        let locked = |what| {
            limits::hit(Limit::AuthLocked);
            tracing::debug!(component, session_id = self.session_id, remote = %self.remote, event = "auth_locked", locked = ?what, "sign-in refused during a lockout");
            Checked::Locked
        };
        if let Admission::Locked { what, .. } = guards.auth.admit(client, &key) {
            return locked(what);
        }
        let known = guards.auth.known(client, &key);
        let Ok(slot) = guards.password.slot(known, client).await else {
            guards.auth.busy(client);
            tracing::debug!(component, session_id = self.session_id, remote = %self.remote, event = "auth_busy", "no password-check slot free");
            return Checked::Busy;
        };
        // A lockout may have begun while this attempt waited for its slot.
        if let Admission::Locked { what, .. } = guards.auth.admit(client, &key) {
            drop(slot);
            return locked(what);
        }
        let user = match self.pipeline.directory.user(&key).await {
            Ok(user) => user,
            Err(e) => {
                guards.auth.busy(client);
                tracing::warn!(component, session_id = self.session_id, event = "auth_lookup_failed", error = %e, "user lookup failed");
                self.pipeline.directory_failed();
                return Checked::Unavailable;
            }
        };
        // Hash even for unknown users so timing does not tell which addresses exist.
        let (phc, enabled) = match &user {
            Some(u) => (u.password_hash.clone(), !u.disabled),
            None => (DUMMY_HASH.to_string(), false),
        };
        let Ok(ok) = slot
            .run(move || accounts::verify_password(&password, &phc))
            .await
        else {
            guards.auth.busy(client);
            return Checked::Unavailable;
        };
        let actor = self.channel.actor(&key);
        if ok
            && enabled
            && let Some(user) = user
        {
            tracing::info!(component, session_id = self.session_id, remote = %self.remote, event = "auth_success", user = %key, "authenticated");
            guards.auth.succeeded(client, &key);
            self.audit
                .spawn(self.entry(Entry::success("auth.login", actor)));
            return Checked::Verified(Box::new(user));
        }
        let failure = guards.auth.failed(client, &key);
        let reason = match &user {
            None => "unknown user",
            Some(_) if !enabled => "user disabled",
            Some(_) => "wrong password",
        };
        // The first failure of an address in a summary period is logged and audited on
        // its own; the rest go into the periodic summary (limits::throttle).
        if failure.audit_now {
            tracing::warn!(component, session_id = self.session_id, remote = %self.remote, event = "auth_failure", user = %key, reason, "authentication failed");
            self.audit.spawn(
                self.entry(Entry::failure("auth.login", actor.clone()))
                    .detail("reason", reason),
            );
        } else {
            tracing::debug!(component, session_id = self.session_id, remote = %self.remote, event = "auth_failure", user = %key, reason, "authentication failed");
        }
        for (locked, what, target) in [
            (failure.locked_address, "address", client.to_string()),
            (failure.locked_account, "account", key.clone()),
        ] {
            if locked {
                let lockout = self.lockout_seconds;
                tracing::warn!(component, session_id = self.session_id, remote = %self.remote, event = "auth_lockout", locked = what, target = %target, lockout_seconds = lockout, "too many failed authentications: locked out");
                self.audit.spawn(
                    self.entry(Entry::failure("auth.lockout", actor.clone()))
                        .target(format!("{what}:{target}"))
                        .detail("lockout_seconds", lockout),
                );
            }
        }
        // Slow guessing down without holding a thread; the delay grows per failure.
        tokio::time::sleep(failure.delay).await;
        Checked::Refused
    }

    fn entry(&self, entry: Entry) -> Entry {
        (self.decorate)(entry.remote(self.remote))
    }
}

/// An argon2id hash of a random password, verified against for unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Xq5Ux3ZF3bw3d3C6VNaF0VvN8mP3CMCh0X3QqK1Wd4o";
