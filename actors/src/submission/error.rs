//! Why the pipeline did not take a message (or a recipient): one type for every way in.
//! Each boundary turns it into its own answer exactly once, and logs it under its own
//! component: the SMTP session into a reply (`Session::reply_for`,
//! `smtp/session/finish.rs`), the API into an error body (`refused`, `src/api/v1/send.rs`).

use sea_orm::DbErr;

use super::sender::Refusal;
use crate::proto::Address;
use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A dependency (database, object store) is down: try again later.
    #[error("not accepting mail while a dependency is down")]
    NotAccepting,
    /// `storage.limit_bytes` is reached.
    #[error("the message store is full (storage.limit_bytes)")]
    StorageFull,
    /// Larger than `smtp.limits.max_message_size`.
    #[error("the message is larger than smtp.limits.max_message_size ({limit} bytes)")]
    TooBig { limit: usize },
    /// More than `smtp.limits.max_recipients` addresses.
    #[error("more than {limit} recipients (smtp.limits.max_recipients)")]
    TooManyRecipients { limit: usize },
    /// A local domain without such an enabled user.
    #[error("no local user {0}")]
    UnknownUser(Address),
    /// Another domain, for a client that may not relay.
    #[error("relaying to {0} is not allowed")]
    RelayDenied(Address),
    /// The sender (envelope or From:) is not one the account may use.
    #[error("sender refused: {}", .0.reason())]
    Sender(Refusal),
    /// The API's sender is no account of this server that may send.
    #[error("{0}")]
    NoSuchSender(SenderProblem),
    /// A pre_receive or pre_send hook refused it.
    #[error("refused by a {hook} hook: {text}")]
    Rejected { hook: &'static str, text: String },
    /// A pre_receive or pre_send hook asked to try again later.
    #[error("deferred by a {hook} hook: {text}")]
    Deferred { hook: &'static str, text: String },
    /// The directory could not answer (the database failed).
    #[error("directory lookup failed: {0}")]
    Directory(DbErr),
    /// The message could not be stored durably; nothing of it was kept.
    #[error("not stored: {0}")]
    NotStored(StoreError),
    /// Its From: domain has DKIM keys but the signature could not be made (the master
    /// key file missing, a key that does not open, the keys unreadable).
    #[error("not signed: {0}")]
    NotSigned(crate::dkim::signer::SignError),
    /// The sender checks (`sender_auth`) refused it: the DMARC policy of its From:
    /// domain, or its SPF record, with `mail_auth.*` set to reject.
    #[error("{0}")]
    AuthFailed(String),
    /// rspamd called it spam (`reject`).
    #[error("{0}")]
    Spam(String),
    /// rspamd asked to try again later (`soft reject`, `greylist`), or could not scan
    /// it with `spam.rspamd.on_error: tempfail`.
    #[error("{0}")]
    SpamDeferred(String),
    /// The sender checks could not finish (the From: domain's DMARC record could not be
    /// read in time): try again later.
    #[error("{0}")]
    AuthDeferred(String),
    /// The account (or its domain) sent its hourly allowance (`send_limits`).
    #[error("{0}")]
    SendLimit(crate::limits::sending::Exceeded),
    /// The send counters could not be read or written (the database).
    #[error("send counters: {0}")]
    SendCounters(sea_orm::DbErr),
    /// A step failed inside the server (a task panicked); nothing was stored.
    #[error("internal error: {0}")]
    Internal(String),
    /// The StorageActor did not answer (stopped, or its mailbox closed).
    #[error("storage unreachable: {0}")]
    StorageUnreachable(actix::MailboxError),
}

/// Why an address cannot be the API's sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderProblem {
    #[error("{0} is not one of this server's domains")]
    ForeignDomain(String),
    #[error("no user {0}: the sender must be an existing user of this server")]
    NoUser(String),
    #[error("user {0} is disabled and cannot send")]
    Disabled(String),
}

impl SubmitError {
    /// Temporary: the same message may be accepted later without any change.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            SubmitError::NotAccepting
                | SubmitError::StorageFull
                | SubmitError::Deferred { .. }
                | SubmitError::Directory(_)
                | SubmitError::NotStored(_)
                | SubmitError::NotSigned(_)
                | SubmitError::Internal(_)
                | SubmitError::SpamDeferred(_)
                | SubmitError::AuthDeferred(_)
                | SubmitError::SendCounters(_)
                | SubmitError::StorageUnreachable(_)
        ) || matches!(self, SubmitError::SendLimit(e) if !e.permanent)
    }

    /// A stable name for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SubmitError::NotAccepting => "not_accepting",
            SubmitError::StorageFull => "storage_full",
            SubmitError::TooBig { .. } => "too_big",
            SubmitError::TooManyRecipients { .. } => "too_many_recipients",
            SubmitError::UnknownUser(_) => "unknown_user",
            SubmitError::RelayDenied(_) => "relay_denied",
            SubmitError::Sender(r) => r.reason(),
            SubmitError::NoSuchSender(_) => "no_such_sender",
            SubmitError::Rejected { .. } => "rejected_by_hook",
            SubmitError::Deferred { .. } => "deferred_by_hook",
            SubmitError::Directory(_) => "directory_failed",
            SubmitError::NotStored(_) => "not_stored",
            SubmitError::NotSigned(_) => "not_signed",
            SubmitError::AuthFailed(_) => "sender_auth_failed",
            SubmitError::Internal(_) => "internal_error",
            SubmitError::Spam(_) => "spam",
            SubmitError::AuthDeferred(_) => "sender_auth_deferred",
            SubmitError::SendLimit(_) => "send_limit",
            SubmitError::SendCounters(_) => "send_counters_failed",
            SubmitError::SpamDeferred(_) => "spam_deferred",
            SubmitError::StorageUnreachable(_) => "storage_unreachable",
        }
    }
}
