//! Several nodes on one PostgreSQL and one S3 bucket share one outbound queue (SPEC M6,
//! O13): every message is delivered exactly once while both run, and when one node is
//! killed its claimed entries return after their lease and the other delivers them;
//! only what the dead node had in flight may arrive twice.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::sink::Sink;
use common::{Options, PASSWORD, TestServer, postgres_url, s3_endpoint, tls_login};
use mail_send::smtp::message::Message;
use mairust_entities::queue_history;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

const REMOTE: &str = "remote.test";
const MESSAGES: usize = 2000;
const CLIENTS: usize = 8;
const WORKERS: usize = 4;
const BATCH: usize = 16;

fn options(sink: &Sink, workers: usize) -> Options {
    Options {
        extra_yaml: format!(
            "queue:\n  workers: {workers}\n  batch_size: {BATCH}\n  poll_interval_seconds: 0.2\n  lease_seconds: 3\ndelivery:\n  routes:\n    {REMOTE}: {}\n",
            sink.addr
        ),
        ..Options::default()
    }
}

/// Queues `MESSAGES` messages through `server`'s submission port, `CLIENTS` at a time.
async fn queue_messages(server: &TestServer, round: &str) {
    let started = Instant::now();
    let port = server.submission.port();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let round = round.to_string();
        tasks.push(tokio::spawn(async move {
            let login = TestServer::address("bob");
            let mut client = tls_login(port, false, &login, PASSWORD)
                .await
                .expect("login");
            let peer = format!("peer@{REMOTE}");
            for n in (c..MESSAGES).step_by(CLIENTS) {
                let id = format!("{round}-{n}@example.test");
                let body = common::message(&login, &peer, &id, "Shared queue");
                client
                    .send(Message::new(
                        login.as_str(),
                        [peer.as_str()],
                        body.strip_suffix("\r\n").unwrap().as_bytes(),
                    ))
                    .await
                    .expect("queued");
            }
            client.quit().await.ok();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    report(&format!(
        "{round}: queued {MESSAGES} messages in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
}

/// Message-ID → times received, for one round.
fn deliveries(sink: &Sink, round: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in sink.received() {
        if let Some(id) = r
            .message_id()
            .filter(|id| id.starts_with(&format!("{round}-")))
        {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    seen
}

fn wait_all(sink: &Sink, round: &str, timeout: Duration) -> HashMap<String, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = deliveries(sink, round);
        if seen.len() >= MESSAGES || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn delivering_nodes(server: &TestServer) -> HashMap<String, usize> {
    let db = server.db().await;
    let rows: Vec<String> = queue_history::Entity::find()
        .select_only()
        .column(queue_history::Column::NodeId)
        .filter(queue_history::Column::Outcome.eq("delivered"))
        .into_tuple()
        .all(&db)
        .await
        .unwrap();
    db.close().await.ok();
    let mut by_node = HashMap::new();
    for node in rows {
        *by_node.entry(node).or_insert(0) += 1;
    }
    by_node
}

/// Figures for the CI log: also written to target/tmp/two_nodes.txt, which `.ci/run`
/// prints (test output is captured).
fn report(line: &str) {
    eprintln!("{line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("two_nodes.txt");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    use std::io::Write;
    writeln!(f, "{line}").unwrap();
}

fn stop(server: &mut TestServer) {
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(30)).success());
}

#[tokio::test]
async fn two_nodes_share_one_queue_and_take_over_from_a_killed_node() {
    if !common::backend_available(
        postgres_url().is_some() && s3_endpoint().is_some(),
        "MAIRUST_TEST_POSTGRES_URL and MAIRUST_TEST_S3_ENDPOINT (.ci/run sets both)",
    ) {
        return;
    }
    let sink = Sink::start();

    // Round 1: queue with no workers, then two delivering nodes.
    let mut a = TestServer::start_with(options(&sink, 0));
    queue_messages(&a, "r1").await;
    stop(&mut a);
    a.reconfigure(options(&sink, WORKERS));
    a.spawn();
    let mut b = a.start_node(options(&sink, WORKERS));
    let started = Instant::now();
    let seen = wait_all(&sink, "r1", Duration::from_secs(120));
    report(&format!(
        "round 1: delivered in {:.1}s by two nodes",
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(seen.len(), MESSAGES, "every message delivered");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let nodes = delivering_nodes(&a).await;
    report(&format!(
        "round 1: {MESSAGES} messages, each delivered once; by node: {nodes:?}"
    ));
    assert_eq!(nodes.len(), 2, "both nodes delivered: {nodes:?}");

    // Round 2: queue again, start both, kill one mid-run.
    stop(&mut a);
    stop(&mut b);
    a.reconfigure(options(&sink, 0));
    a.spawn();
    queue_messages(&a, "r2").await;
    stop(&mut a);
    a.reconfigure(options(&sink, WORKERS));
    a.spawn();
    b.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while deliveries(&sink, "r2").len() < MESSAGES / 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before_kill = deliveries(&sink, "r2").len();
    b.signal(libc::SIGKILL);
    b.wait_exit(Duration::from_secs(10));
    let seen = wait_all(&sink, "r2", Duration::from_secs(120));
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    report(&format!(
        "round 2: node killed after {before_kill} deliveries; {} of {MESSAGES} delivered; duplicates: {duplicates} (at most {} could be in flight on the killed node)",
        seen.len(),
        WORKERS * BATCH
    ));
    assert_eq!(
        seen.len(),
        MESSAGES,
        "every message delivered after the kill"
    );
    assert!(
        duplicates <= WORKERS * BATCH,
        "duplicates beyond what the dead node had in flight: {duplicates}"
    );
    let nodes = delivering_nodes(&a).await;
    report(&format!(
        "deliveries recorded by node over both rounds: {nodes:?}"
    ));
}
