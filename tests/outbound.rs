//! The outbound queue end to end: mail submitted over SMTP is queued, delivered to an
//! in-test SMTP server standing for the remote side (routed with `delivery.routes`),
//! retried, bounced with a DSN, and inspected with `mairust queue`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::dns::{DnsServer, Zone};
use common::raw::RawClient;
use common::sink::Sink;
use common::{Options, PASSWORD, TestServer, eventually, message, tls_login};
use mail_send::smtp::message::Message;
use mairust_entities::{message as message_entity, queue_entry, queue_history};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

const REMOTE: &str = "remote.test";

/// Fast retries, short lifetime; `routes` sends domains to local ports. The
/// `delivery:` section comes last, so a test may append keys to it.
fn options(routes: &[(&str, SocketAddr)], max_age_seconds: f64) -> Options {
    let routes: Vec<String> = routes.iter().map(|(d, a)| format!("{d}: {a}")).collect();
    Options {
        extra_yaml: format!(
            "queue:\n  workers: 2\n  poll_interval_seconds: 0.2\n  lease_seconds: 10\n  max_age_seconds: {max_age_seconds}\n  retry:\n    initial_seconds: 0.5\n    factor: 1.5\n    max_seconds: 1\ndelivery:\n  connect_timeout_seconds: 2\n  command_timeout_seconds: 10\n  routes: {{{}}}\n",
            routes.join(", ")
        ),
        ..Options::default()
    }
}

/// Submits over port 587 as `user` (STARTTLS + AUTH), like a mail client.
async fn submit(server: &TestServer, user: &str, from: &str, to: &[&str], body: &str) {
    let login = TestServer::address(user);
    let mut client = tls_login(server.submission.port(), false, &login, PASSWORD)
        .await
        .expect("login");
    client
        .send(Message::new(
            from,
            to.iter().copied(),
            body.strip_suffix("\r\n").unwrap_or(body).as_bytes(),
        ))
        .await
        .expect("submission accepted");
    client.quit().await.ok();
}

async fn queue_len(server: &TestServer) -> u64 {
    let db = server.db().await;
    let n = queue_entry::Entity::find().count(&db).await.unwrap();
    db.close().await.ok();
    n
}

/// (outcome, recipient) of every attempt on the entry of the message with `message_id`.
async fn history_of(server: &TestServer, entry_id: &str) -> Vec<(String, String)> {
    let db = server.db().await;
    let rows = queue_history::Entity::find()
        .filter(queue_history::Column::EntryId.eq(entry_id))
        .order_by_asc(queue_history::Column::Id)
        .all(&db)
        .await
        .unwrap();
    db.close().await.ok();
    rows.into_iter().map(|h| (h.outcome, h.recipient)).collect()
}

/// The queue id (= message id) of a submitted message, from the log of its storage.
async fn queue_id(server: &TestServer, message_id: &str) -> String {
    let db = server.db().await;
    // The row first, the history after: an outbound-only message's row goes once its
    // last recipient is done, after that attempt's history was written, so one of the
    // two always names it (read the other way round, a delivery finishing between the
    // two reads hid it from both).
    let rows = message_entity::Entity::find()
        .filter(message_entity::Column::MessageId.eq(message_id))
        .all(&db)
        .await
        .unwrap();
    let history = queue_history::Entity::find()
        .order_by_asc(queue_history::Column::Id)
        .all(&db)
        .await
        .unwrap();
    db.close().await.ok();
    if let Some(row) = rows.first() {
        return row.id.clone();
    }
    // An outbound-only message's row is gone once delivered; the history keeps its id.
    history
        .iter()
        .rev()
        .find(|h| !h.message_id.is_empty())
        .map(|h| h.entry_id.clone())
        .expect("message known")
}

/// The outcomes of every attempt on an entry, oldest first.
async fn outcomes(server: &TestServer, entry_id: &str) -> Vec<String> {
    history_of(server, entry_id)
        .await
        .into_iter()
        .map(|(outcome, _)| outcome)
        .collect()
}

/// An address nothing listens on: an unreachable remote host.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn bounces(inbox: &[message_entity::Model]) -> Vec<&message_entity::Model> {
    inbox
        .iter()
        .filter(|m| m.subject.as_deref() == Some("Undelivered Mail Returned to Sender"))
        .collect()
}

#[tokio::test]
async fn submitted_mail_is_delivered_once_and_local_copies_stay() {
    let sink = Sink::start();
    let server = TestServer::start_with(options(&[(REMOTE, sink.addr)], 60.0));
    let bob = TestServer::address("bob");
    let alice = TestServer::address("alice");
    let far = format!("friend@{REMOTE}");
    let body = message(&bob, &far, "out-1@example.test", "Hello over there");
    submit(&server, "bob", &bob, &[&far, &alice], &body).await;

    assert!(sink.wait_for(1, Duration::from_secs(10)), "delivered");
    let got = &sink.received()[0];
    assert_eq!(got.from, bob);
    assert_eq!(got.rcpts, vec![far.clone()]);
    let data = String::from_utf8(got.data.clone()).unwrap();
    assert!(data.starts_with("Received: from "), "{data}");
    assert!(
        data.ends_with(&body),
        "body delivered as submitted:\n{data}"
    );
    // The local recipient has the same message; the queue is empty again.
    let stored = server.messages_with_id("out-1@example.test").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(server.inbox("alice").await.len(), 1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            queue_len(&server).await == 0
        })
        .await
    );
    assert_eq!(
        history_of(&server, &stored[0].id).await,
        vec![("delivered".to_string(), far.clone())]
    );
    let object = server.object(&stored[0].object_key).await;
    assert!(object.is_some(), "alice's copy keeps the body");

    // A message only for the remote side: delivered, then its row and body go.
    let body = message(&bob, &far, "out-2@example.test", "Only remote");
    submit(&server, "bob", &bob, &[&far], &body).await;
    assert!(sink.wait_for(2, Duration::from_secs(10)));
    assert!(
        eventually(Duration::from_secs(5), || async {
            server
                .messages_with_id("out-2@example.test")
                .await
                .is_empty()
        })
        .await
    );
    // Nothing is delivered twice, even after more polling.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.count(), 2);
    assert_eq!(sink.rcpt_attempts(&far), 2);
}

#[tokio::test]
async fn temporary_failure_is_retried_until_delivered() {
    let sink = Sink::start();
    let server = TestServer::start_with(options(&[(REMOTE, sink.addr)], 60.0));
    let bob = TestServer::address("bob");
    let far = format!("busy@{REMOTE}");
    // A NUL in a reply must not break recording (PostgreSQL refuses NUL in text).
    sink.script_rcpt(&far, &["451 4.3.0 try\0later", "452 4.2.2 mailbox full"]);
    let body = message(&bob, &far, "retry-1@example.test", "Patience");
    submit(&server, "bob", &bob, &[&far], &body).await;

    assert!(
        sink.wait_for(1, Duration::from_secs(15)),
        "delivered on retry"
    );
    assert_eq!(sink.rcpt_attempts(&far), 3);
    let id = queue_id(&server, "retry-1@example.test").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            queue_len(&server).await == 0
        })
        .await
    );
    let outcomes: Vec<String> = outcomes(&server, &id).await;
    assert_eq!(outcomes, ["deferred", "deferred", "delivered"]);
    let db = server.db().await;
    let first = queue_history::Entity::find()
        .filter(queue_history::Column::EntryId.eq(&id))
        .order_by_asc(queue_history::Column::Id)
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    db.close().await.ok();
    assert_eq!(first.reply.as_deref(), Some("451 4.3.0 try later"));
    assert_eq!(first.remote_host.as_deref(), Some("127.0.0.1"));
    assert!(bounces(&server.inbox("bob").await).is_empty(), "no bounce");
}

#[tokio::test]
async fn permanent_failure_bounces_exactly_once() {
    let sink = Sink::start();
    let server = TestServer::start_with(options(&[(REMOTE, sink.addr)], 60.0));
    let bob = TestServer::address("bob");
    let gone = format!("gone@{REMOTE}");
    let fine = format!("fine@{REMOTE}");
    sink.script_rcpt(&gone, &["550 5.1.1 no such user here"]);
    let body = message(&bob, &gone, "bounce-1@example.test", "To someone who left");
    submit(&server, "bob", &bob, &[&gone, &fine], &body).await;

    assert!(
        sink.wait_for(1, Duration::from_secs(10)),
        "the good recipient gets it"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            bounces(&server.inbox("bob").await).len() == 1
        })
        .await,
        "one DSN in the sender's INBOX"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let inbox = server.inbox("bob").await;
    let dsns = bounces(&inbox);
    assert_eq!(dsns.len(), 1, "exactly one DSN");
    let dsn = dsns[0];
    assert_eq!(dsn.envelope_from, "", "a DSN has the null sender");
    let raw = String::from_utf8(server.object(&dsn.object_key).await.unwrap()).unwrap();
    assert!(raw.contains("multipart/report"), "{raw}");
    assert!(
        raw.contains("report-type=delivery-status")
            || raw.contains("report-type=\"delivery-status\""),
        "{raw}"
    );
    assert!(
        raw.contains(&format!("Final-Recipient: rfc822; {gone}")),
        "{raw}"
    );
    assert!(raw.contains("Status: 5.1.1"), "{raw}");
    assert!(raw.contains("550 5.1.1 no such user here"), "{raw}");
    assert!(
        !raw.contains(&format!("Final-Recipient: rfc822; {fine}")),
        "{raw}"
    );
    assert_eq!(sink.rcpt_attempts(&gone), 1, "a 5xx is not retried");
    assert_eq!(queue_len(&server).await, 0);
}

#[tokio::test]
async fn unreachable_host_is_retried_then_bounced_after_max_age() {
    // A port nothing listens on.
    let closed = closed_port();
    let server = TestServer::start_with(options(&[(REMOTE, closed)], 3.0));
    let bob = TestServer::address("bob");
    let far = format!("someone@{REMOTE}");
    let body = message(&bob, &far, "expire-1@example.test", "Nobody home");
    submit(&server, "bob", &bob, &[&far], &body).await;
    let id = queue_id(&server, "expire-1@example.test").await;

    assert!(
        eventually(Duration::from_secs(15), || async {
            bounces(&server.inbox("bob").await).len() == 1
        })
        .await,
        "bounced after max_age"
    );
    let outcomes: Vec<String> = outcomes(&server, &id).await;
    assert!(
        outcomes.len() >= 3,
        "retried before giving up: {outcomes:?}"
    );
    assert!(
        outcomes[..outcomes.len() - 1]
            .iter()
            .all(|o| o == "deferred"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.last().map(String::as_str), Some("expired"));
    let inbox = server.inbox("bob").await;
    let raw =
        String::from_utf8(server.object(&bounces(&inbox)[0].object_key).await.unwrap()).unwrap();
    assert!(raw.contains("Status: 4.4.7"), "{raw}");
    assert!(raw.contains("4.4.1"), "the last error is quoted: {raw}");
    assert_eq!(queue_len(&server).await, 0);
}

#[tokio::test]
async fn a_bounce_is_never_sent_to_the_null_sender() {
    let sink = Sink::start();
    // A gateway relaying notifications with the null sender, which the submission
    // policy refuses unless allowed.
    let server = TestServer::start_with(Options {
        smtp_yaml: vec![
            "submission:".into(),
            "  allow_null_sender: true".into(),
            "  enforce_from_header: false".into(),
        ],
        ..options(&[(REMOTE, sink.addr)], 60.0)
    });
    let far = format!("gone@{REMOTE}");
    sink.script_rcpt(&far, &["550 5.1.1 no such user"]);
    let body = message("", &far, "null-1@example.test", "A notification");
    submit(&server, "bob", "", &[&far], &body).await;
    let id = queue_id(&server, "null-1@example.test").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            history_of(&server, &id)
                .await
                .iter()
                .any(|(o, _)| o == "bounced")
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            queue_len(&server).await == 0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.inbox("bob").await.is_empty(),
        "no DSN anywhere local"
    );
    assert_eq!(sink.count(), 0, "and none sent out");
    assert!(server.log_contains("bounce_suppressed"));
}

/// A relayer's whole transaction sent at once (PIPELINING), body and QUIT included, as
/// spam software does without reading the answers; the reply codes, up to QUIT's 221.
async fn pipelined_relay_attempt(addr: SocketAddr, from: &str, rcpt: &str) -> Vec<u16> {
    let (mut c, greeting) = RawClient::connect(addr).await;
    assert_eq!(greeting.code, 220);
    c.expect("EHLO attacker.test", 250).await;
    c.send(
        format!(
            "MAIL FROM:<{from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\nSubject: relayed\r\n\r\nspam\r\n.\r\nQUIT\r\n"
        )
        .as_bytes(),
    )
    .await;
    let mut codes = Vec::new();
    while let Some(r) = c.reply().await {
        codes.push(r.code);
        if r.code == 221 {
            break;
        }
    }
    codes
}

#[tokio::test]
async fn unauthenticated_clients_still_cannot_relay() {
    let sink = Sink::start();
    let server = TestServer::start_with(options(&[(REMOTE, sink.addr)], 60.0));
    let victim = format!("victim@{REMOTE}");
    // RCPT refused with 5.7.1, so DATA has no recipient (503) and the body's lines are
    // mere bad commands.
    for from in ["spam@attacker.test", &TestServer::address("bob")] {
        let (mut c, _) = RawClient::connect(server.inbound).await;
        c.expect("EHLO attacker.test", 250).await;
        c.expect(&format!("MAIL FROM:<{from}>"), 250).await;
        let r = c.cmd(&format!("RCPT TO:<{victim}>")).await;
        assert_eq!((r.code, &r.text[..5]), (550, "5.7.1"), "{from}: {r:?}");
        c.expect("QUIT", 221).await;
        let codes = pipelined_relay_attempt(server.inbound, from, &victim).await;
        assert_eq!(codes[..3], [250, 550, 503], "{from}: {codes:?}");
        assert!(
            !codes[1..].iter().any(|c| [250, 354].contains(c)),
            "{from}: nothing after MAIL accepted: {codes:?}"
        );
    }
    // Submission without AUTH refuses the transaction itself.
    let codes = pipelined_relay_attempt(server.submission, "spam@attacker.test", &victim).await;
    assert_eq!(codes[0], 530, "{codes:?}");
    assert!(
        !codes.iter().any(|c| [250, 354].contains(c)),
        "nothing accepted without AUTH: {codes:?}"
    );

    // Then mail that may be relayed: bob, logged in. Once the sink has it and the queue
    // is empty, anything the attempts above had queued would be there too.
    let bob = TestServer::address("bob");
    let friend = format!("friend@{REMOTE}");
    let body = message(&bob, &friend, "relay-ok@example.test", "Allowed");
    submit(&server, "bob", &bob, &[&friend], &body).await;
    assert!(sink.wait_for(1, Duration::from_secs(10)), "not delivered");
    assert!(
        eventually(Duration::from_secs(10), || async {
            queue_len(&server).await == 0
        })
        .await,
        "queue not empty: something else was queued"
    );
    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].rcpts, [friend]);
    assert_eq!(
        received[0].message_id().as_deref(),
        Some("relay-ok@example.test")
    );
    assert_eq!(sink.rcpt_attempts(&victim), 0, "the victim was never tried");
    assert!(
        server
            .messages_with_id("relay-ok@example.test")
            .await
            .is_empty(),
        "delivered: its row is gone"
    );
}

#[tokio::test]
async fn queue_cli_lists_retries_and_deletes_with_and_without_the_server() {
    let closed = closed_port();
    let mut opts = options(&[(REMOTE, closed)], 3600.0);
    // Slow retries so the entries stay put while we look.
    opts.extra_yaml = opts
        .extra_yaml
        .replace("initial_seconds: 0.5", "initial_seconds: 600")
        .replace("max_seconds: 1", "max_seconds: 600");
    let mut server = TestServer::start_with(opts);
    let bob = TestServer::address("bob");
    let far = format!("later@{REMOTE}");
    for n in 1..=2 {
        let body = message(&bob, &far, &format!("cli-{n}@example.test"), "Queued");
        submit(&server, "bob", &bob, &[&far], &body).await;
    }
    let first = server.messages_with_id("cli-1@example.test").await[0]
        .id
        .clone();
    let second = server.messages_with_id("cli-2@example.test").await[0]
        .id
        .clone();
    // Wait for the first (failed) attempt so the entries are deferred.
    assert!(
        eventually(Duration::from_secs(10), || async {
            history_of(&server, &second).await.len() == 1
        })
        .await
    );

    // While the server runs.
    let list = server.cli_ok(&["queue", "list"], None);
    assert!(list.contains(&first) && list.contains(&second), "{list}");
    assert!(list.contains(&format!("pending {far}")), "{list}");
    assert!(list.contains("next attempt in"), "{list}");
    assert!(list.contains("4.4.1"), "last error shown: {list}");
    let stats: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["queue", "stats", "--json"], None)).unwrap();
    assert_eq!(stats["entries"], 2, "{stats}");
    assert_eq!(stats["pending_recipients"], 2, "{stats}");
    assert_eq!(stats["deferred"], 2, "{stats}");
    assert_eq!(stats["last_hour"]["deferred"], 2, "{stats}");

    // /health reports the queue from the last probe.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (status, body) = server.http_get("/health").await;
            status == 200
                && body["checks"]["queue"]["length"] == 2
                && body["checks"]["queue"]["status"] == "healthy"
                && body["checks"]["queue"]["oldest_age_seconds"].is_i64()
        })
        .await,
        "{:?}",
        server.http_get("/health").await
    );

    // And while it is stopped.
    server.stop_within(Duration::from_secs(20));
    let listed: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["queue", "list", "--json"], None)).unwrap();
    let entries = listed.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["recipients"][0]["address"], far.as_str());
    assert_eq!(entries[0]["attempts"], 1);
    assert!(
        entries.iter().all(|e| e["lease_owner"].is_null()),
        "released on shutdown"
    );

    let out = server.cli_ok(&["queue", "retry", &first], None);
    assert!(out.contains("due now"), "{out}");
    let stats: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["queue", "stats", "--json"], None)).unwrap();
    assert_eq!(stats["due"], 1, "{stats}");

    let out = server.cli_ok(&["queue", "delete", &second], None);
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(queue_len(&server).await, 1);
    assert!(
        server
            .messages_with_id("cli-2@example.test")
            .await
            .is_empty(),
        "its row went"
    );
    let outcomes: Vec<String> = outcomes(&server, &second).await;
    assert_eq!(outcomes, ["deferred", "deleted"]);

    for args in [
        ["queue", "retry", "no-such-id"],
        ["queue", "delete", "no-such-id"],
    ] {
        let out = server.cli(&args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no queued message with id no-such-id"),
            "{err}"
        );
    }

    // Started again, the retried entry is attempted at once.
    server.spawn();
    assert!(
        eventually(Duration::from_secs(10), || async {
            history_of(&server, &first).await.len() == 2
        })
        .await
    );
}

#[tokio::test]
async fn delivery_pauses_while_the_database_is_down_and_resumes() {
    let sink = Sink::start();
    let server = TestServer::start_with(options(&[(REMOTE, sink.addr)], 600.0));
    if !common::backend_available(
        server.backend.is_postgres(),
        "MAIRUST_TEST_POSTGRES_URL (a database that can be stopped)",
    ) {
        return;
    }
    let bob = TestServer::address("bob");
    let far = format!("friend@{REMOTE}");
    let body = message(&bob, &far, "pause-1@example.test", "Before the outage");
    submit(&server, "bob", &bob, &[&far], &body).await;
    assert!(sink.wait_for(1, Duration::from_secs(10)));

    server.backend.pg_block(true);
    assert!(
        eventually(Duration::from_secs(10), || async {
            server.log_contains("queue_paused")
        })
        .await,
        "the queue notices"
    );
    server.backend.pg_block(false);
    assert!(
        eventually(Duration::from_secs(15), || async {
            server.log_contains("queue_resumed")
        })
        .await,
        "and resumes by itself"
    );
    let body = message(&bob, &far, "pause-2@example.test", "After the outage");
    assert!(
        eventually(Duration::from_secs(15), || async {
            server.wait_ready_status(200, Duration::from_secs(1)).await
        })
        .await
    );
    submit(&server, "bob", &bob, &[&far], &body).await;
    assert!(
        sink.wait_for(2, Duration::from_secs(10)),
        "delivered after recovery"
    );
}

/// One worker claiming up to ten entries; `drain_seconds` after SIGTERM.
fn drain_options(sink: &Sink, workers: usize, drain_seconds: u64) -> Options {
    let mut o = options(&[(REMOTE, sink.addr)], 600.0);
    o.extra_yaml = o.extra_yaml.replace(
        "workers: 2",
        &format!("workers: {workers}\n  batch_size: 10"),
    );
    o.drain_timeout_seconds = drain_seconds;
    o
}

/// Entries left in the queue and how many of them still carry a lease.
async fn leftovers(server: &TestServer) -> (usize, usize) {
    let db = server.db().await;
    let rows = queue_entry::Entity::find().all(&db).await.unwrap();
    db.close().await.ok();
    let leased = rows.iter().filter(|e| e.lease_owner.is_some()).count();
    (rows.len(), leased)
}

/// Queues `n` messages (Message-IDs `PREFIX-i@example.test`) on a server with no
/// worker, then restarts it on `options`, whose one worker claims them all as one batch.
async fn queue_then_deliver(server: &mut TestServer, prefix: &str, n: usize, options: Options) {
    submit_many(server, prefix, n).await;
    server.stop_within(Duration::from_secs(15));
    server.reconfigure(options);
    server.spawn();
}

/// `n` queued messages claimed as one batch by a sink that takes `data_delay` to
/// answer each body, then SIGTERM once a delivery is in flight: the server (exited)
/// and how long it took to exit.
async fn stop_while_delivering(
    sink: &Sink,
    n: usize,
    data_delay: Duration,
    drain_seconds: u64,
) -> (TestServer, Duration) {
    let mut server = TestServer::start_with(drain_options(sink, 0, drain_seconds));
    sink.set_data_delay(data_delay);
    let options = drain_options(sink, 1, drain_seconds);
    queue_then_deliver(&mut server, "drain", n, options).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            sink.data_started() >= 1
        })
        .await,
        "a delivery is in flight"
    );
    let asked = std::time::Instant::now();
    server.stop_within(Duration::from_secs(15));
    (server, asked.elapsed())
}

/// Every message reached the sink exactly once: `n` distinct Message-IDs in `n`
/// deliveries.
fn assert_each_delivered_once(sink: &Sink, n: usize) {
    let mut ids: Vec<String> = sink
        .received()
        .iter()
        .filter_map(|r| r.message_id())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!((ids.len(), sink.count()), (n, n), "each delivered once");
}

async fn submit_many(server: &TestServer, prefix: &str, n: usize) {
    let bob = TestServer::address("bob");
    let far = format!("friend@{REMOTE}");
    for i in 0..n {
        let body = message(&bob, &far, &format!("{prefix}-{i}@example.test"), "Drain");
        submit(server, "bob", &bob, &[&far], &body).await;
    }
}

#[tokio::test]
async fn sigterm_finishes_the_delivery_in_flight_and_releases_the_rest() {
    let sink = Sink::start();
    let (mut server, _) = stop_while_delivering(&sink, 5, Duration::from_millis(1500), 10).await;
    let delivered = sink.count();
    assert_eq!(
        delivered, 1,
        "the message in flight was finished, no other started"
    );
    assert_eq!(leftovers(&server).await, (4, 0), "the rest released");

    // The next start delivers the rest, nothing twice.
    sink.set_data_delay(Duration::ZERO);
    server.spawn();
    assert!(sink.wait_for(5, Duration::from_secs(15)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_each_delivered_once(&sink, 5);
    assert_eq!(
        sink.connections.load(std::sync::atomic::Ordering::Acquire),
        2,
        "one connection per run: the four after the restart shared one"
    );
}

#[tokio::test]
async fn drain_timeout_abandons_a_stuck_delivery_and_keeps_the_message() {
    let sink = Sink::start();
    let (server, took) = stop_while_delivering(&sink, 2, Duration::from_secs(30), 1).await;
    assert!(
        took < Duration::from_secs(8),
        "did not wait for the stuck server: {took:?}"
    );
    assert_eq!(leftovers(&server).await, (2, 0), "both kept, released");
}

#[tokio::test]
async fn starttls_is_used_when_the_remote_server_offers_it() {
    // The remote side is another MaiRust, whose inbound listener offers STARTTLS.
    let remote = TestServer::start();
    remote.cli_ok(&["domain", "add", REMOTE], None);
    remote.cli_ok(
        &[
            "user",
            "add",
            &format!("friend@{REMOTE}"),
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    let server = TestServer::start_with(options(&[(REMOTE, remote.inbound)], 60.0));
    let bob = TestServer::address("bob");
    let far = format!("friend@{REMOTE}");
    let body = message(&bob, &far, "tls-1@example.test", "Encrypted on the way");
    submit(&server, "bob", &bob, &[&far], &body).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            !remote
                .messages_with_id("tls-1@example.test")
                .await
                .is_empty()
        })
        .await,
        "delivered to the remote server"
    );
    let row = &remote.messages_with_id("tls-1@example.test").await[0];
    assert_eq!(row.envelope_from, bob);
    let raw = String::from_utf8(remote.object(&row.object_key).await.unwrap()).unwrap();
    let first_received = raw.lines().take(3).collect::<Vec<_>>().join(" ");
    assert!(first_received.contains("with ESMTPS"), "{first_received}");
    assert!(raw.ends_with(&body), "{raw}");
}

#[tokio::test]
async fn mx_records_from_the_configured_name_server_decide_the_next_hop() {
    let sink = Sink::start();
    let localhost = std::net::Ipv4Addr::LOCALHOST;
    let mut zone = Zone::default();
    zone.mx.insert(
        "mx-domain.test".into(),
        vec![(10, "mail.mx-domain.test".into())],
    );
    zone.a.insert("mail.mx-domain.test".into(), vec![localhost]);
    // No MX: the domain's own address (RFC 5321 §5.1).
    zone.a.insert("plain.test".into(), vec![localhost]);
    // Null MX (RFC 7505): accepts no mail.
    zone.mx
        .insert("nomail.test".into(), vec![(0, String::new())]);
    let dns = DnsServer::start(zone);
    let mut opts = options(&[], 60.0);
    opts.extra_yaml.push_str(&format!(
        "  mx_port: {}\n  dns:\n    nameservers: [\"{}\"]\n",
        sink.addr.port(),
        dns.addr
    ));
    let server = TestServer::start_with(opts);
    let bob = TestServer::address("bob");
    let rcpts = [
        "a@mx-domain.test",
        "b@plain.test",
        "c@nomail.test",
        "d@nowhere.test",
    ];
    let body = message(&bob, rcpts[0], "mx-1@example.test", "Found by MX");
    submit(&server, "bob", &bob, &rcpts, &body).await;

    assert!(
        sink.wait_for(2, Duration::from_secs(10)),
        "MX and implicit MX delivered"
    );
    let mut got: Vec<String> = sink
        .received()
        .iter()
        .flat_map(|r| r.rcpts.clone())
        .collect();
    got.sort();
    assert_eq!(got, ["a@mx-domain.test", "b@plain.test"]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            bounces(&server.inbox("bob").await).len() == 1
        })
        .await,
        "one DSN for the two undeliverable domains"
    );
    let inbox = server.inbox("bob").await;
    let raw =
        String::from_utf8(server.object(&bounces(&inbox)[0].object_key).await.unwrap()).unwrap();
    assert!(
        raw.contains("Final-Recipient: rfc822; c@nomail.test"),
        "{raw}"
    );
    assert!(raw.contains("Status: 5.1.10"), "{raw}");
    assert!(
        raw.contains("Final-Recipient: rfc822; d@nowhere.test"),
        "{raw}"
    );
    assert!(raw.contains("Status: 5.1.2"), "{raw}");
}

/// With `queue.max_batch_bytes` below one message, a worker loads one body at a time,
/// and a batch is still delivered whole, each message once, over one connection.
#[tokio::test]
async fn bodies_are_loaded_in_slices_within_max_batch_bytes() {
    let sink = Sink::start();
    let mut server = TestServer::start_with(drain_options(&sink, 0, 10));
    let mut o = drain_options(&sink, 1, 10);
    o.extra_yaml = o
        .extra_yaml
        .replace("batch_size: 10", "batch_size: 10\n  max_batch_bytes: 1");
    queue_then_deliver(&mut server, "slice", 6, o).await;
    assert!(sink.wait_for(6, Duration::from_secs(15)));
    assert_each_delivered_once(&sink, 6);
    assert_eq!(
        sink.connections.load(std::sync::atomic::Ordering::Acquire),
        1,
        "the slices share the destination's connection"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            queue_len(&server).await == 0
        })
        .await
    );
}
