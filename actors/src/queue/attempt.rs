//! One delivery attempt: the entries a worker claimed ([`super::store::claim`]), and
//! what the attempt did to each recipient, which the worker fills in (deliver, expire,
//! bounce), logs, and [`super::store::record`]s.

use chrono::{DateTime, Utc};

use super::reply::RemoteReply;

/// `queue_history.outcome` values: what an attempt (or the operator) did to a
/// recipient. The names are also the delivery log events and the deliveries metric's
/// labels.
pub const DELIVERED: &str = "delivered";
pub const DEFERRED: &str = "deferred";
pub const BOUNCED: &str = "bounced";
pub const EXPIRED: &str = "expired";
/// Removed by `mairust queue delete` without delivery or bounce.
pub const DELETED: &str = "deleted";

/// A claimed entry with what a delivery attempt needs.
#[derive(Debug, Clone)]
pub struct ClaimedEntry {
    pub id: String,
    pub message_id: String,
    pub object_key: String,
    /// The body's size in bytes, so a worker can plan what it loads at once.
    pub size: u64,
    pub envelope_from: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Attempts before this one.
    pub attempts: i32,
    /// Its pending recipients: all of them are tried in this attempt.
    pub recipients: Vec<ClaimedRecipient>,
}

#[derive(Debug, Clone)]
pub struct ClaimedRecipient {
    pub id: i64,
    pub address: String,
    pub domain: String,
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        reply: RemoteReply,
    },
    /// Try again later (4xx, connection failure).
    Deferred {
        reply: RemoteReply,
    },
    /// Given up: 5xx, or `queue.max_age` reached. A DSN has been sent (unless the sender
    /// is null).
    Failed {
        reply: RemoteReply,
        expired: bool,
    },
    /// Not attempted (shutdown): back to the queue as it was.
    Released,
}

impl Outcome {
    /// The outcome a reply means for its recipient (RFC 5321 §4.2.1: 2xx taken, 5xx
    /// refused for good, anything else worth another try).
    pub fn of(reply: &RemoteReply) -> Outcome {
        let reply = reply.clone();
        if reply.is_positive() {
            Outcome::Delivered { reply }
        } else if reply.is_permanent() {
            Outcome::Failed {
                reply,
                expired: false,
            }
        } else {
            Outcome::Deferred { reply }
        }
    }

    /// Its name in the history (see [`DELIVERED`]); `None` when nothing was attempted.
    pub fn history_name(&self) -> Option<&'static str> {
        match self {
            Outcome::Delivered { .. } => Some(DELIVERED),
            Outcome::Deferred { .. } => Some(DEFERRED),
            Outcome::Failed { expired: false, .. } => Some(BOUNCED),
            Outcome::Failed { expired: true, .. } => Some(EXPIRED),
            Outcome::Released => None,
        }
    }

    pub fn reply(&self) -> Option<&RemoteReply> {
        match self {
            Outcome::Delivered { reply }
            | Outcome::Deferred { reply }
            | Outcome::Failed { reply, .. } => Some(reply),
            Outcome::Released => None,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self, Outcome::Delivered { .. } | Outcome::Failed { .. })
    }
}

/// The result of one attempt on one recipient.
#[derive(Debug, Clone)]
pub struct RecipientResult {
    pub recipient: ClaimedRecipient,
    pub outcome: Outcome,
    pub remote_host: Option<String>,
}

impl RecipientResult {
    pub fn new(recipient: &ClaimedRecipient, outcome: Outcome, host: Option<&str>) -> Self {
        RecipientResult {
            recipient: recipient.clone(),
            outcome,
            remote_host: host.map(str::to_string),
        }
    }
}

/// The result of one attempt on one claimed entry: one result per claimed recipient.
#[derive(Debug, Clone)]
pub struct EntryResult {
    pub entry: ClaimedEntry,
    pub recipients: Vec<RecipientResult>,
}

impl EntryResult {
    /// The same outcome for each of `recipients` (the entry's recipients at one
    /// destination).
    pub fn push_all(
        &mut self,
        recipients: &[&ClaimedRecipient],
        outcome: &Outcome,
        host: Option<&str>,
    ) {
        self.recipients.extend(
            recipients
                .iter()
                .map(|r| RecipientResult::new(r, outcome.clone(), host)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::reply::EnhancedStatus;

    #[test]
    fn replies_become_outcomes_by_class() {
        let reply = |code| RemoteReply::new(code, Some(EnhancedStatus::new(2, 0, 0)), "x");
        assert!(matches!(
            Outcome::of(&reply(250)),
            Outcome::Delivered { .. }
        ));
        assert!(matches!(Outcome::of(&reply(451)), Outcome::Deferred { .. }));
        assert!(matches!(Outcome::of(&reply(421)), Outcome::Deferred { .. }));
        assert!(matches!(
            Outcome::of(&reply(550)),
            Outcome::Failed { expired: false, .. }
        ));
        assert_eq!(Outcome::of(&reply(550)).history_name(), Some("bounced"));
        assert_eq!(Outcome::Released.history_name(), None);
    }
}
