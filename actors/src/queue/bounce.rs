//! Giving up on recipients: deferrals past `queue.max_age` become failures, and each
//! entry's failures go back to its sender in one DSN ([`super::dsn`] builds it), stored
//! through the StorageActor like any message (local mailbox or the queue).

use std::net::{IpAddr, Ipv4Addr};

use chrono::Utc;

use super::attempt::{ClaimedEntry, EntryResult, Outcome};
use super::bodies::load_body;
use super::context::QueueContext;
use super::dsn::{self, FailedRecipient};
use super::reply::EnhancedStatus;
use crate::accounts::{self, RecipientLookup};
use crate::proto::command::Address;
use crate::storage::{IncomingMessage, StoreMessage};

/// Deferred recipients of entries past `queue.max_age` are given up.
pub(super) fn expire(results: &mut [EntryResult]) {
    let now = Utc::now();
    for e in results.iter_mut().filter(|e| now >= e.entry.expires_at) {
        for r in &mut e.recipients {
            if let Outcome::Deferred { reply } = &r.outcome {
                r.outcome = Outcome::Failed {
                    reply: reply.clone(),
                    expired: true,
                };
            }
        }
    }
}

/// One DSN per entry for the recipients that failed in this attempt, to the envelope
/// sender; none for the null sender. A DSN that cannot be stored turns its failures
/// back into deferrals, so the bounce is retried rather than lost.
pub(super) async fn send_bounces(q: &QueueContext, results: &mut [EntryResult]) {
    for e in results.iter_mut() {
        let failed: Vec<FailedRecipient> = e
            .recipients
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed { reply, expired } => Some(FailedRecipient {
                    address: r.recipient.address.clone(),
                    status: if *expired {
                        EnhancedStatus::DELIVERY_EXPIRED
                    } else {
                        reply.dsn_status()
                    },
                    diagnostic: reply.clone(),
                    remote_mta: r.remote_host.clone(),
                    expired: *expired,
                }),
                _ => None,
            })
            .collect();
        if failed.is_empty() {
            continue;
        }
        if e.entry.envelope_from.is_empty() {
            tracing::info!(component = "queue", event = "bounce_suppressed", id = %e.entry.id, "not bouncing a message from the null sender");
            continue;
        }
        // One body at a time; a DSN without the original is still sent.
        let original = load_body(q, &e.entry.object_key).await;
        if let Err(err) = bounce(q, &e.entry, &failed, original.bytes()).await {
            tracing::warn!(component = "queue", id = %e.entry.id, error = %err, "DSN not stored; failure will be retried");
            for r in &mut e.recipients {
                if let Outcome::Failed { reply, .. } = &r.outcome {
                    r.outcome = Outcome::Deferred {
                        reply: reply.clone(),
                    };
                }
            }
        }
    }
}

async fn bounce(
    q: &QueueContext,
    entry: &ClaimedEntry,
    failed: &[FailedRecipient],
    original: &[u8],
) -> Result<(), String> {
    let Some(sender) = Address::parse(&entry.envelope_from) else {
        tracing::warn!(component = "queue", id = %entry.id, sender = %entry.envelope_from, "cannot bounce to an unparsable sender");
        return Ok(());
    };
    let (local, outbound) = match accounts::lookup_recipient(&q.db, &sender)
        .await
        .map_err(|e| e.to_string())?
    {
        RecipientLookup::Local(l) => (vec![l], vec![]),
        RecipientLookup::Remote => (vec![], vec![sender]),
        RecipientLookup::UnknownUser => {
            tracing::warn!(component = "queue", id = %entry.id, sender = %entry.envelope_from, "bounce for a local sender that no longer exists dropped");
            return Ok(());
        }
    };
    let raw = dsn::build(&dsn::Bounce {
        reporting_mta: &q.config.server.hostname,
        original_sender: &entry.envelope_from,
        queue_id: &entry.id,
        arrival: entry.created_at,
        failed,
        original,
    });
    let id = uuid::Uuid::now_v7().to_string();
    let message = IncomingMessage::new(
        id.clone(),
        raw,
        String::new(),
        local,
        "queue",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        outbound,
    );
    match q.storage.send(StoreMessage::new(message)).await {
        Ok(Ok(())) => {
            tracing::info!(component = "queue", event = "dsn_sent", id = %entry.id, dsn_id = %id, to = %entry.envelope_from, recipients = failed.len(), "delivery status notification sent");
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
