//! Delivering one claimed batch: recipients grouped by destination (route, smarthost
//! or MX), one connection per destination carrying its messages one after another,
//! and an outcome for every claimed recipient.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tracing::Instrument;

use super::attempt::{ClaimedEntry, ClaimedRecipient, EntryResult, Outcome, RecipientResult};
use super::bodies::{Body, DestinationBodies, SharedBodies};
use super::client::Connection;
use super::context::QueueContext;
use super::reply::{self, RemoteReply};
use super::route::Router;
use crate::shutdown::Phase;

/// How long a missing body may just be late: on SQLite a message's row can commit
/// before its object is flushed (storage::actor, Parallel mode).
const YOUNG: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Resolves when shutdown began and the drain time is over.
async fn drain_deadline(mut shutdown: watch::Receiver<Phase>, timeout: Duration) {
    let _ = shutdown.wait_for(|p| *p != Phase::Running).await;
    tokio::time::sleep(timeout).await;
}

/// One destination's share of a batch: (entry index, its recipients there), in claim
/// order.
type DestinationItems<'a> = Vec<(usize, Vec<&'a ClaimedRecipient>)>;

/// The batch's recipients grouped by destination ([`Router::destination`]), so each
/// destination gets one connection for all its messages.
fn by_destination<'a>(
    router: &Router,
    entries: &'a [ClaimedEntry],
) -> BTreeMap<String, DestinationItems<'a>> {
    let mut groups: BTreeMap<String, DestinationItems<'a>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let mut by_dest: BTreeMap<String, Vec<&ClaimedRecipient>> = BTreeMap::new();
        for r in &e.recipients {
            by_dest
                .entry(router.destination(&r.domain))
                .or_default()
                .push(r);
        }
        for (dest, rcpts) in by_dest {
            groups.entry(dest).or_default().push((i, rcpts));
        }
    }
    groups
}

/// Delivers a batch: recipients grouped by destination, one connection per destination
/// carrying its messages one after another. Once shutdown began and the drain time is
/// over, whatever is still going is abandoned and its recipients released.
pub(super) async fn deliver(q: &QueueContext, entries: &[ClaimedEntry]) -> Vec<EntryResult> {
    let mut results: Vec<EntryResult> = entries
        .iter()
        .map(|e| EntryResult {
            entry: e.clone(),
            recipients: Vec::with_capacity(e.recipients.len()),
        })
        .collect();
    let groups = by_destination(&q.router, entries);
    let mut remaining = vec![0u32; entries.len()];
    for items in groups.values() {
        for (i, _) in items {
            remaining[*i] += 1;
        }
    }
    let mut shared = SharedBodies::new(remaining);
    let drain = Duration::from_secs(q.config.server.shutdown.drain_timeout_seconds);
    let deadline = drain_deadline(q.shutdown.clone(), drain);
    tokio::pin!(deadline);
    for (dest, items) in groups {
        let done: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
        let abandoned = tokio::select! {
            _ = deliver_destination(q, &dest, items, entries, &mut shared, &mut results)
                .instrument(tracing::info_span!("delivery.destination", destination = %dest)) => false,
            _ = deadline.as_mut() => true,
        };
        if abandoned {
            tracing::warn!(component = "queue", event = "drain_abandoned", destination = %dest, "drain timeout: deliveries abandoned, entries released");
            break;
        }
        for i in done {
            shared.done(i);
        }
    }
    // Recipients without a result were not (or not completely) tried: released.
    for (e, r) in entries.iter().zip(results.iter_mut()) {
        for rcpt in &e.recipients {
            if !r.recipients.iter().any(|x| x.recipient.id == rcpt.id) {
                r.recipients
                    .push(RecipientResult::new(rcpt, Outcome::Released, None));
            }
        }
    }
    results
}

/// What to do with recipients whose body is not there: `None` when it is loaded.
fn without_body(body: &Body, entry: &ClaimedEntry) -> Option<Outcome> {
    let why = match body {
        Body::Loaded(_) => return None,
        // Not flushed yet (SQLite, Parallel mode): try again shortly, not an attempt.
        Body::Missing if Utc::now() - entry.created_at < YOUNG => return Some(Outcome::Released),
        Body::Missing => reply::body_missing(),
        Body::Unavailable(err) => reply::body_unavailable(err),
    };
    Some(Outcome::Deferred { reply: why })
}

async fn deliver_destination(
    q: &QueueContext,
    dest: &str,
    items: DestinationItems<'_>,
    entries: &[ClaimedEntry],
    shared: &mut SharedBodies,
    results: &mut [EntryResult],
) {
    let hops = match q.router.hops(dest).await {
        Ok(hops) => hops,
        Err(e) => {
            let outcome = Outcome::of(&e.reply());
            for (i, rcpts) in items {
                results[i].push_all(&rcpts, &outcome, None);
            }
            return;
        }
    };
    let mut bodies =
        DestinationBodies::new(q, entries, shared, items.iter().map(|(i, _)| *i).collect());
    let max_per_connection = q.config.delivery.max_messages_per_connection;
    let mut conn: Option<Connection> = None;
    let mut sent = 0usize;
    let mut unreachable: Option<RemoteReply> = None;
    for (pos, (i, rcpts)) in items.into_iter().enumerate() {
        // Shutdown: start nothing new (what is left gets released).
        if *q.shutdown.borrow() != Phase::Running {
            break;
        }
        let defer_all = |results: &mut [EntryResult], reply: &RemoteReply, host: Option<&str>| {
            let reply = reply.clone();
            results[i].push_all(&rcpts, &Outcome::Deferred { reply }, host);
        };
        if let Some(reply) = &unreachable {
            defer_all(results, reply, None);
            continue;
        }
        let body = bodies.get(pos).await;
        if let Some(outcome) = without_body(body, &entries[i]) {
            results[i].push_all(&rcpts, &outcome, None);
            continue;
        }
        if sent >= max_per_connection
            && let Some(c) = conn.take()
        {
            c.quit().await;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(&hops, &q.client).await {
                Ok(c) => {
                    sent = 0;
                    conn.insert(c)
                }
                Err(e) => {
                    let reply = reply::cannot_connect(dest, &e.to_string());
                    defer_all(results, &reply, None);
                    unreachable = Some(reply);
                    continue;
                }
            },
        };
        let host = c.host.clone();
        let addrs: Vec<&str> = rcpts.iter().map(|r| r.address.as_str()).collect();
        sent += 1;
        match c
            .send(&entries[i].envelope_from, &addrs, body.bytes())
            .await
        {
            Ok(result) => {
                let closing = result.recipients.iter().any(RemoteReply::closes_connection);
                for (r, reply) in rcpts.iter().zip(&result.recipients) {
                    results[i].recipients.push(RecipientResult::new(
                        r,
                        Outcome::of(reply),
                        Some(&host),
                    ));
                }
                if closing {
                    conn = None;
                }
            }
            Err(e) => {
                let reply = reply::connection_lost(&host, &e.to_string());
                defer_all(results, &reply, Some(&host));
                conn = None;
            }
        }
    }
    if let Some(c) = conn {
        c.quit().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::DeliveryConfig;
    use crate::queue::route::NoResolver;

    fn entry(id: &str, recipients: &[(i64, &str)]) -> ClaimedEntry {
        ClaimedEntry {
            id: id.into(),
            message_id: id.into(),
            object_key: id.into(),
            size: 1,
            envelope_from: "a@local.test".into(),
            created_at: Utc::now(),
            expires_at: Utc::now(),
            attempts: 0,
            recipients: recipients
                .iter()
                .map(|(rid, address)| ClaimedRecipient {
                    id: *rid,
                    address: address.to_string(),
                    domain: address.split_once('@').unwrap().1.into(),
                })
                .collect(),
        }
    }

    #[test]
    fn recipients_are_grouped_by_destination_across_entries() {
        let config = DeliveryConfig {
            routes: [("routed.test".to_string(), "127.0.0.1:2526".to_string())].into(),
            ..Default::default()
        };
        let router = Router::new(&config, Arc::new(NoResolver("none".into())));
        let entries = [
            entry(
                "e0",
                &[(1, "x@a.test"), (2, "y@routed.test"), (3, "z@a.test")],
            ),
            entry("e1", &[(4, "w@routed.test")]),
        ];
        // "destination: entry[recipient ids] ...", in the order delivery takes them.
        let groups: Vec<String> = by_destination(&router, &entries)
            .into_iter()
            .map(|(dest, items)| {
                let items: Vec<String> = items
                    .iter()
                    .map(|(i, rcpts)| {
                        format!("{i}{:?}", rcpts.iter().map(|r| r.id).collect::<Vec<_>>())
                    })
                    .collect();
                format!("{dest}: {}", items.join(" "))
            })
            .collect();
        assert_eq!(groups, ["127.0.0.1:2526: 0[2] 1[4]", "mx:a.test: 0[1, 3]"]);
    }
}
