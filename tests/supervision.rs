//! Supervision (issue 14): children of the actor tree made to fail on purpose through
//! failpoints (`FAILPOINTS`, see `mairust_actors::failpoint`) are restarted, mail keeps
//! flowing, each restart is logged (`actor_restarted`) and counted
//! (`mairust_actor_restarts_total`), and a child that keeps failing spends its budget
//! and turns `/health/ready` to 503.

mod common;

use std::time::Duration;

use common::raw::RawClient;
use common::sink::Sink;
use common::{Options, PASSWORD, TestServer, deliver_to_bob, eventually, message, tls_login};
use mail_send::smtp::message::Message;
use tokio::io::AsyncReadExt;

const REMOTE: &str = "remote.test";

/// The server with `failpoints` armed, `queue_workers` workers and `smtp_workers` SMTP
/// arbiters (one accept loop per listener on each).
fn options(failpoints: &str, queue_workers: usize, smtp_workers: usize) -> Options {
    Options {
        env: vec![("FAILPOINTS".into(), failpoints.into())],
        smtp_workers,
        extra_yaml: format!(
            "queue:\n  workers: {queue_workers}\n  poll_interval_seconds: 0.2\n  lease_seconds: 10\n"
        ),
        ..Options::default()
    }
}

/// The `actor_restarted` events logged so far: (actor, child, reason).
fn restarts(server: &TestServer) -> Vec<(String, String, String)> {
    server
        .log_lines()
        .iter()
        .filter(|l| l["event"] == "actor_restarted")
        .map(|l| {
            let field = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (field("actor"), field("child"), field("reason"))
        })
        .collect()
}

/// Waits until `n` restarts of children of kind `actor` are logged; returns them as
/// (child, reason).
async fn wait_restarts(server: &TestServer, actor: &str, n: usize) -> Vec<(String, String)> {
    let of_kind = || -> Vec<(String, String)> {
        restarts(server)
            .into_iter()
            .filter(|(a, _, _)| a == actor)
            .map(|(_, child, reason)| (child, reason))
            .collect()
    };
    let seen = eventually(Duration::from_secs(20), || async { of_kind().len() >= n }).await;
    assert!(
        seen,
        "{n} restart(s) of {actor} expected; log:\n{}",
        server.logs.lock().unwrap().join("\n")
    );
    of_kind()
}

/// `mairust_actor_restarts_total{actor="..."}` as scraped from `/metrics`.
async fn restart_metric(server: &TestServer, actor: &str) -> u64 {
    let text = server.metrics_text().await;
    let prefix = format!("mairust_actor_restarts_total{{actor=\"{actor}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// A local message to bob is answered 250 and lands in his inbox.
async fn bob_receives(server: &TestServer, message_id: &str) {
    let reply = deliver_to_bob(server, message_id).await;
    assert_eq!(reply.code, 250, "{} {}", reply.code, reply.text);
    assert_eq!(server.messages_with_id(message_id).await.len(), 1);
}

/// Bob submits a message for a remote address (port 587, STARTTLS + AUTH): queued.
async fn submit_remote(server: &TestServer, message_id: &str) {
    let bob = TestServer::address("bob");
    let far = format!("far@{REMOTE}");
    let mut client = tls_login(server.submission.port(), false, &bob, PASSWORD)
        .await
        .expect("login");
    let body = message(&bob, &far, message_id, "hello");
    client
        .send(Message::new(
            bob.as_str(),
            [far.as_str()],
            body.trim_end().as_bytes(),
        ))
        .await
        .expect("submission accepted");
    client.quit().await.ok();
}

#[tokio::test]
async fn a_queue_worker_that_panics_is_restarted_and_delivers() {
    let sink = Sink::start();
    let mut opts = options("queue_worker_loop=1*panic", 1, 2);
    opts.extra_yaml += &format!("delivery:\n  routes: {{{REMOTE}: {}}}\n", sink.addr);
    let mut server = TestServer::start_with(opts);
    // The only worker panicked at its first turn; delivery rests on its restart.
    let restarted = wait_restarts(&server, "queue_worker", 1).await;
    assert_eq!(restarted, [("queue_worker#0".into(), "panicked".into())]);

    submit_remote(&server, "sv-queue@example.test").await;
    assert!(
        sink.wait_for(1, Duration::from_secs(20)),
        "the restarted worker delivers"
    );
    assert_eq!(restart_metric(&server, "queue_worker").await, 1);
    assert_eq!(restart_metric(&server, "storage").await, 0);

    // At shutdown the workers and accept loops end for good: nothing is restarted.
    server.stop();
    assert_eq!(restarts(&server).len(), 1, "no restart during the shutdown");
}

#[tokio::test]
async fn an_accept_loop_that_panics_or_fails_is_restarted_on_the_same_socket() {
    // One SMTP arbiter: one accept loop per listener, so nothing else would accept.
    let server =
        TestServer::start_with(options("smtp_accept=1*panic->1*return(socket gone)", 1, 1));
    for n in 1..=2 {
        // The loop dies with the connection it accepted: closed without a greeting.
        let mut stream = tokio::net::TcpStream::connect(server.inbound)
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the connection is closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        wait_restarts(&server, "smtp_listener", n).await;
    }
    let restarted = wait_restarts(&server, "smtp_listener", 2).await;
    assert_eq!(
        restarted,
        [
            ("smtp_listener:inbound#0".into(), "panicked".into()),
            ("smtp_listener:inbound#0".into(), "socket gone".into())
        ]
    );
    // The restarted loop serves the same port.
    bob_receives(&server, "sv-listener@remote.test").await;
    let (_c, greeting) = RawClient::connect(server.inbound).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(restart_metric(&server, "smtp_listener").await, 2);
}

#[tokio::test]
async fn a_storage_actor_that_panics_or_stops_is_restarted_behind_the_same_address() {
    let server = TestServer::start_with(options("storage_batch=1*panic->1*return", 1, 2));
    // The message whose batch panics is not stored: 451, and nothing of it is left.
    let reply = deliver_to_bob(&server, "sv-storage-1@remote.test").await;
    assert_eq!(reply.code, 451, "{} {}", reply.code, reply.text);
    wait_restarts(&server, "storage", 1).await;
    // The next batch stops the actor: 451 again.
    let reply = deliver_to_bob(&server, "sv-storage-2@remote.test").await;
    assert_eq!(reply.code, 451, "{} {}", reply.code, reply.text);
    let restarted = wait_restarts(&server, "storage", 2).await;
    assert_eq!(
        restarted,
        [
            ("storage".into(), "panicked".into()),
            ("storage".into(), "stopped".into())
        ]
    );
    // Sessions keep the address they had: the restarted actor stores.
    bob_receives(&server, "sv-storage-3@remote.test").await;
    for failed in ["sv-storage-1@remote.test", "sv-storage-2@remote.test"] {
        assert!(server.messages_with_id(failed).await.is_empty(), "{failed}");
    }
    assert_eq!(restart_metric(&server, "storage").await, 2);
    assert_eq!(server.http_get("/health/ready").await.0, 200);
}

#[tokio::test]
async fn a_health_monitor_that_panics_is_restarted() {
    // The first probe (at start) passes, the second panics. No queue worker: the
    // queue stays as it is, and only the monitor's probes count it.
    let server = TestServer::start_with(options("health_probe=1*off->1*panic", 0, 2));
    let restarted = wait_restarts(&server, "health_monitor", 1).await;
    assert_eq!(restarted, [("health_monitor".into(), "panicked".into())]);
    bob_receives(&server, "sv-health@remote.test").await;
    // The restarted monitor probes again: the queue it counts grows.
    submit_remote(&server, "sv-health-queued@example.test").await;
    let counted = eventually(Duration::from_secs(10), || async {
        server.http_get("/health").await.1["checks"]["queue"]["length"] == 1
    })
    .await;
    assert!(counted, "the restarted HealthMonitor counts the queue");
    assert_eq!(restart_metric(&server, "health_monitor").await, 1);
    assert_eq!(server.http_get("/health/ready").await.0, 200);
}

#[tokio::test]
async fn a_child_that_keeps_failing_spends_its_budget_and_the_node_turns_unhealthy() {
    let server = TestServer::start_with(options("queue_worker_loop=panic", 1, 2));
    // Five restarts within the minute (100 ms doubling: about 3 s), then it stays down.
    assert!(
        server.wait_ready_status(503, Duration::from_secs(30)).await,
        "/health/ready turns 503"
    );
    let (_, body) = server.http_get("/health/ready").await;
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["checks"]["actors"]["status"], "unhealthy", "{body}");
    assert_eq!(
        body["checks"]["actors"]["failed"],
        serde_json::json!(["queue_worker#0"]),
        "{body}"
    );
    let spent: Vec<_> = server
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "actor_restart_budget_spent")
        .collect();
    assert_eq!(spent.len(), 1);
    assert_eq!(spent[0]["child"], "queue_worker#0");
    assert_eq!(spent[0]["level"], "error");
    assert_eq!(wait_restarts(&server, "queue_worker", 5).await.len(), 5);
    assert_eq!(restart_metric(&server, "queue_worker").await, 5);
    // The rest of the node still works: local mail is stored.
    bob_receives(&server, "sv-budget@remote.test").await;
}

#[tokio::test]
async fn a_storage_actor_that_spends_its_budget_turns_new_mail_away_at_mail_from() {
    let server = TestServer::start_with(options("storage_batch=panic", 0, 2));
    // Every batch panics: each message is answered 451 and not kept, until the
    // StorageActor has spent its budget (5 restarts, about 3 s of backoff).
    let mut refused = Vec::new();
    let spent = eventually(Duration::from_secs(60), || {
        let id = format!("sv-lost-{}@remote.test", refused.len());
        refused.push(id.clone());
        let server = &server;
        async move {
            let reply = deliver_to_bob(server, &id).await;
            assert_eq!(reply.code, 451, "{} {}", reply.code, reply.text);
            server.http_get("/health/ready").await.0 == 503
        }
    })
    .await;
    assert!(spent, "/health/ready turns 503");
    let (_, body) = server.http_get("/health/ready").await;
    assert_eq!(
        body["checks"]["actors"]["failed"],
        serde_json::json!(["storage"]),
        "{body}"
    );
    // With nothing left to store into, a new transaction is refused before any data
    // is sent, not after it.
    let (mut c, greeting) = RawClient::connect(server.inbound).await;
    assert_eq!(greeting.code, 220);
    c.expect("EHLO client.test", 250).await;
    let mail = c.cmd("MAIL FROM:<a@remote.test>").await;
    assert_eq!(mail.code, 451, "{} {}", mail.code, mail.text);
    assert!(mail.text.starts_with("4.3.0"), "{}", mail.text);
    for id in &refused {
        assert!(server.messages_with_id(id).await.is_empty(), "{id}");
    }
}

#[tokio::test]
async fn a_janitor_that_panics_is_restarted_and_the_tree_keeps_serving() {
    // Before the Janitor was a supervised task, its panic ended the Supervisor's own
    // context, and with it every SMTP arbiter and the queue.
    let server = TestServer::start_with(options("janitor_run=1*panic", 1, 2));
    let restarted = wait_restarts(&server, "janitor", 1).await;
    assert_eq!(restarted, [("janitor".into(), "panicked".into())]);
    assert_eq!(restart_metric(&server, "janitor").await, 1);
    bob_receives(&server, "sv-janitor@remote.test").await;
    assert_eq!(server.http_get("/health/ready").await.0, 200);
    // The Supervisor still answers for its other children.
    assert_eq!(restart_metric(&server, "hook_refresh").await, 0);
}
