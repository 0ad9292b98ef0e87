//! `mail_auth`: the checks of mail from other servers (SPF, DKIM, DMARC, ARC) and what
//! their failures cost the message.

use serde::Deserialize;

use super::ConfigError;

/// What happens to a message whose check failed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailAction {
    /// Delivered to the inbox; the Authentication-Results header tells the reader.
    Accept,
    /// Delivered to the recipients' Junk mailbox.
    Junk,
    /// Refused at the end of DATA with `550 5.7.1`; nothing is stored.
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailAuthConfig {
    /// Check mail that no local account submits (from other servers, on any listener):
    /// SPF of MAIL FROM (`postmaster@<HELO>` for bounces) and of the HELO name, DKIM
    /// signatures, DMARC of the From: domain, ARC. Off: no DNS lookups, no
    /// Authentication-Results header (forged ones claiming `authserv_id` are removed
    /// all the same).
    pub verify: bool,
    /// The authserv-id of our Authentication-Results headers; `server.hostname` when
    /// empty. Headers from elsewhere that claim it are removed, whether or not mail is
    /// checked.
    pub authserv_id: String,
    /// The time each DNS-bound step of one message's checks may take is a third of
    /// this: SPF (MAIL FROM and HELO side by side), then DKIM with ARC, then DMARC once
    /// for each From: domain (at most 5). It is not a total: one message may wait up to
    /// 7/3 of it, and parsing and hashing the message are not counted. Past its share an
    /// SPF identity is `temperror`, and so is every DKIM signature (ARC is then
    /// `none`): the checks go on, and such a result never aligns for DMARC. A DMARC
    /// record not read in time defers the message with `451 4.7.1` (its policy is
    /// unknown).
    pub timeout_seconds: f64,
    /// A DMARC failure of a domain whose policy is `p=reject`.
    pub dmarc_reject: FailAction,
    /// A DMARC failure of a domain whose policy is `p=quarantine`.
    pub dmarc_quarantine: FailAction,
    /// An SPF `fail` (the domain's `-all`) of MAIL FROM when no DMARC policy decides:
    /// the From: domain publishes none (or `p=none`) and DMARC did not pass, or the
    /// message names no From: domain at all. The HELO name's SPF result is recorded
    /// only: it costs nothing by itself.
    pub spf_fail: FailAction,
}

impl Default for MailAuthConfig {
    fn default() -> Self {
        MailAuthConfig {
            verify: true,
            authserv_id: String::new(),
            timeout_seconds: 15.0,
            dmarc_reject: FailAction::Reject,
            dmarc_quarantine: FailAction::Junk,
            spf_fail: FailAction::Junk,
        }
    }
}

impl MailAuthConfig {
    /// The authserv-id: `authserv_id`, else the host name.
    pub fn authserv_id<'a>(&'a self, hostname: &'a str) -> &'a str {
        if self.authserv_id.is_empty() {
            hostname
        } else {
            &self.authserv_id
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let t = self.timeout_seconds;
        if !(t.is_finite() && t > 0.0 && t <= 300.0) {
            return Err(ConfigError::new(
                "mail_auth.timeout_seconds",
                "must be greater than 0 and at most 300",
            ));
        }
        if !self
            .authserv_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(ConfigError::new(
                "mail_auth.authserv_id",
                "must be a host name (letters, digits, '-', '.', '_')",
            ));
        }
        Ok(())
    }
}
