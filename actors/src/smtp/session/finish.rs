//! The end of DATA (RFC 5321 §4.1.1.4): the body goes through the submission pipeline,
//! and what the pipeline says becomes the reply, here and nowhere else.

use std::time::Duration;

use super::incoming::Incoming;
use super::{Session, reply};
use crate::audit::Entry;
use crate::proto::reply::Reply;
use crate::submission::{Origin, Refusal, Submission, SubmitError, Via};

impl Session {
    /// The body is complete: store it durably, then answer (SPEC M4).
    pub(super) async fn finish_data(&mut self, incoming: Incoming) -> Reply {
        let envelope = std::mem::take(&mut self.envelope);
        let pipeline = self.ctx.pipeline.clone();
        let id = uuid::Uuid::now_v7().to_string();
        let submitter = self.client.authenticated.as_ref();
        let origin = Origin {
            via: Via::Smtp {
                helo: self.client.helo.as_deref(),
                esmtp: self.client.esmtp,
                tls: self.client.tls,
            },
            remote: self.remote.ip(),
            account: submitter.map(|s| s.account()),
        };
        let header = pipeline.received_header(origin, &id, &envelope.recipients);
        let copies = pipeline.copies_while_screened(!envelope.recipients.outbound.is_empty());
        let wait = Duration::from_secs(self.ctx.config.smtp.limits.data_timeout_seconds);
        let body = match incoming
            .finish(header.into_bytes(), &self.ctx.limits, copies, wait)
            .await
        {
            Ok(body) => body,
            Err(reply) => {
                tracing::info!(component = "smtp", session_id = %self.id, event = "message_refused", reply = %reply, "message refused");
                return reply;
            }
        };
        // Held until the message is stored: the body's bytes count in the budget.
        let _reservation = body.reservation;
        let submission = Submission {
            id: id.clone(),
            body: body.bytes,
            sender: envelope.mail.as_ref().and_then(|m| m.sender.as_ref()),
            recipients: envelope.recipients,
            listener: self.listener.name(),
            remote: self.remote.ip(),
            helo: self.client.helo.as_deref(),
            submitter,
        };
        match pipeline.submit(submission).await {
            Ok(accepted) => {
                let submitted_by = submitter.map(|s| s.account());
                tracing::info!(component = "smtp", session_id = %self.id, event = "message_stored", id = %accepted.id, size = accepted.size, message_id = %accepted.message_id, submitted_by, "message stored");
                reply::queued(&accepted.id)
            }
            Err(e) => self.refused(&e, Some(&id)),
        }
    }

    /// The reply for what the pipeline did not take, logged (and audited, for a sender
    /// the authenticated account may not use) on the way. `id`: the message's, once
    /// its data came (so a refusal matches the hook calls logged for it).
    pub(super) fn refused(&self, error: &SubmitError, id: Option<&str>) -> Reply {
        match error {
            SubmitError::Sender(refusal) => self.audit_sender_refused(refusal),
            SubmitError::NotStored(_) => {
                tracing::warn!(component = "smtp", session_id = %self.id, event = "message_tempfail", id, error = %error, "message not stored");
            }
            SubmitError::StorageUnreachable(_) => {
                tracing::error!(component = "smtp", session_id = %self.id, error = %error, "storage actor unreachable");
            }
            SubmitError::SendCounters(_) => {
                tracing::warn!(component = "smtp", session_id = %self.id, event = "send_counters_failed", id, error = %error, "send counters unavailable; message refused for now");
            }
            SubmitError::SendLimit(e) => {
                tracing::info!(component = "smtp", session_id = %self.id, event = "send_limit_reached", id, scope = e.scope, kind = e.kind, limit = e.limit, subject = %e.subject, "send limit reached");
            }
            SubmitError::Spam(_) | SubmitError::SpamDeferred(_) => {
                tracing::info!(component = "smtp", session_id = %self.id, event = "message_refused_by_rspamd", id, remote = %self.remote, reason = %error, temporary = error.is_temporary(), "message refused by rspamd");
            }
            SubmitError::AuthFailed(_) | SubmitError::AuthDeferred(_) => {
                tracing::info!(component = "smtp", session_id = %self.id, event = "message_rejected_by_sender_checks", id, remote = %self.remote, reason = %error, "message refused by the sender checks (SPF/DMARC)");
            }
            SubmitError::Internal(_) => {
                tracing::error!(component = "smtp", session_id = %self.id, event = "message_tempfail", id, error = %error, "message not taken: internal error");
            }
            SubmitError::NotSigned(_) => {
                tracing::error!(component = "smtp", session_id = %self.id, event = "message_not_signed", id, error = %error, "DKIM signature not made; message refused for now");
            }
            SubmitError::Rejected { hook, .. } => {
                tracing::info!(component = "smtp", session_id = %self.id, event = "message_rejected_by_hook", id, hook, "message rejected by a hook");
            }
            SubmitError::Deferred { hook, .. } => {
                tracing::info!(component = "smtp", session_id = %self.id, event = "message_tempfailed_by_hook", id, hook, "message deferred by a hook");
            }
            SubmitError::Directory(_) => {
                tracing::warn!(component = "smtp", session_id = %self.id, error = %error, "recipient lookup failed");
            }
            _ => {
                tracing::info!(component = "smtp", session_id = %self.id, event = "message_refused", id, reason = error.reason(), "message refused");
            }
        }
        Self::reply_for(error)
    }

    /// The one mapping from the pipeline's errors to SMTP replies. A refused sender is
    /// 553 5.7.1 at MAIL FROM and 550 5.7.1 at the end of DATA (see `reply`).
    pub(super) fn reply_for(error: &SubmitError) -> Reply {
        match error {
            SubmitError::NotAccepting
            | SubmitError::Directory(_)
            | SubmitError::NotStored(_)
            | SubmitError::NotSigned(_)
            | SubmitError::Internal(_)
            | SubmitError::StorageUnreachable(_) => reply::TEMPFAIL_SYSTEM,
            SubmitError::AuthFailed(text) | SubmitError::Spam(text) => {
                reply::refused_by_policy(text)
            }
            SubmitError::SpamDeferred(text) | SubmitError::AuthDeferred(text) => {
                reply::deferred_by_policy(text)
            }
            SubmitError::SendLimit(e) if e.permanent => reply::refused_by_policy(&e.to_string()),
            SubmitError::SendLimit(e) => reply::send_limit(&e.to_string()),
            SubmitError::SendCounters(_) => reply::TEMPFAIL_SYSTEM,
            SubmitError::StorageFull => reply::STORAGE_FULL,
            SubmitError::TooBig { .. } => reply::MESSAGE_TOO_BIG,
            SubmitError::TooManyRecipients { .. } => reply::TOO_MANY_RECIPIENTS,
            SubmitError::UnknownUser(_) => reply::NO_SUCH_USER,
            SubmitError::RelayDenied(_) => reply::RELAY_DENIED,
            SubmitError::Sender(Refusal::NullSender) => reply::NULL_SENDER_REFUSED,
            SubmitError::Sender(Refusal::EnvelopeSender(_)) | SubmitError::NoSuchSender(_) => {
                reply::SENDER_NOT_OWNED
            }
            SubmitError::Sender(Refusal::NoFromAddress) => reply::FROM_HEADER_MISSING,
            SubmitError::Sender(Refusal::SeveralFromHeaders) => reply::FROM_HEADER_REPEATED,
            SubmitError::Sender(Refusal::FromAddress(_)) => reply::FROM_HEADER_NOT_OWNED,
            SubmitError::Rejected { text, .. } => reply::refused_by_policy(text),
            SubmitError::Deferred { text, .. } => reply::deferred_by_policy(text),
        }
    }

    /// Logs and audits a sender the authenticated account may not use.
    fn audit_sender_refused(&self, refusal: &Refusal) {
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
    }

    pub(super) fn login_entry(&self, entry: Entry) -> Entry {
        entry
            .remote(self.remote.ip())
            .detail("listener", self.listener.name())
            .detail("session_id", self.id.to_string())
    }
}
