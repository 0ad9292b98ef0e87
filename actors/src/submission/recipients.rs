//! The recipients of one message, as the recipient policy admitted them: local users
//! (each once, however often named) and remote addresses for the outbound queue (each
//! once, compared by [`Address::key`]).

use crate::accounts::LocalRecipient;
use crate::proto::Address;

#[derive(Debug, Default, Clone)]
pub struct Recipients {
    /// Local users' INBOXes, one entry per user.
    pub local: Vec<LocalRecipient>,
    /// Remote addresses: the message also enters the outbound queue (SPEC M6).
    pub outbound: Vec<Address>,
    /// Addresses admitted so far, duplicates included: what `smtp.limits.max_recipients`
    /// counts (as RCPT commands do).
    pub(super) admitted: usize,
}

impl Recipients {
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.outbound.is_empty()
    }

    /// Addresses admitted, duplicates included.
    pub fn admitted(&self) -> usize {
        self.admitted
    }

    /// Adds a local user unless already there.
    pub(super) fn add_local(&mut self, recipient: LocalRecipient) {
        self.admitted += 1;
        if !self.local.iter().any(|r| r.user_id == recipient.user_id) {
            self.local.push(recipient);
        }
    }

    /// Adds a remote address unless already there.
    pub(super) fn add_outbound(&mut self, address: Address) {
        self.admitted += 1;
        let key = address.key();
        if !self.outbound.iter().any(|a| a.key() == key) {
            self.outbound.push(address);
        }
    }

    /// The one recipient a Received header may name (`for <...>`, RFC 5321 §4.4): only
    /// when there is exactly one, so no other recipient is disclosed.
    pub fn single(&self) -> Option<String> {
        match (self.local.as_slice(), self.outbound.as_slice()) {
            ([one], []) => Some(one.address.clone()),
            ([], [one]) => Some(one.to_string()),
            _ => None,
        }
    }
}
