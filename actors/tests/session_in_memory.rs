//! The session state machine driven through an in-memory pipe: no socket, no listener,
//! the real StorageActor and HealthMonitor on a temporary SQLite database and directory.

use std::sync::Arc;

use actix::Actor;
use mairust_actors::config::Config;
use mairust_actors::health::HealthMonitor;
use mairust_actors::health_state::HealthState;
use mairust_actors::net::ListenerKind;
use mairust_actors::shutdown::Phase;
use mairust_actors::smtp::session::{Session, SessionContext};
use mairust_actors::storage::{BodyStore, CommitMode, QueueHook, StorageActor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

mod common;
use common::config;

/// What a session needs, on the real StorageActor and HealthMonitor over `db`; keep the
/// returned sender alive (dropping it is a shutdown).
fn session_context(
    config: Arc<Config>,
    db: &sea_orm::DatabaseConnection,
) -> (Arc<SessionContext>, tokio::sync::watch::Sender<Phase>) {
    let bodies = BodyStore::create(&config.storage).unwrap();
    let health = Arc::new(HealthState::default());
    let monitor = HealthMonitor::new(
        health.clone(),
        db.clone(),
        bodies.clone(),
        config.health.clone(),
        "test".into(),
    )
    .start();
    let storage = StorageActor::new(
        db.clone(),
        bodies,
        CommitMode::Parallel,
        monitor.clone().recipient(),
        QueueHook {
            max_age: std::time::Duration::from_secs(3600),
            wakeup: Arc::new(tokio::sync::Notify::new()),
        },
    )
    .start();
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Running);
    let ctx = Arc::new(SessionContext {
        limits: mairust_actors::limits::NodeLimits::new(&config),
        config,
        db: db.clone(),
        storage,
        health,
        health_monitor: monitor.recipient(),
        tls: None,
        shutdown: phase_rx,
        hooks: Arc::new(
            mairust_actors::hooks::HookDispatcher::new(&[], Default::default()).unwrap(),
        ),
        audit: mairust_actors::audit::AuditLog::open(&Default::default(), db.clone(), "test")
            .unwrap(),
    });
    (ctx, phase_tx)
}

#[actix_rt::test]
async fn a_whole_transaction_over_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config(dir.path()));
    let db = common::database(&config, true).await;
    let (ctx, _phase_tx) = session_context(config, &db);

    let (client, server) = tokio::io::duplex(64 * 1024);
    let session = Session::new(
        ctx,
        ListenerKind::Inbound,
        "192.0.2.7:4000".parse().unwrap(),
    );
    let running = actix_rt::spawn(session.run(Box::new(server)));

    let (read, mut write) = tokio::io::split(client);
    let mut lines = BufReader::new(read).lines();
    let mut next = async || lines.next_line().await.unwrap().unwrap();
    assert!(next().await.starts_with("220 "));
    write
        .write_all(b"EHLO pipe.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        .await
        .unwrap();
    let mut ehlo = vec![next().await];
    while ehlo.last().unwrap().starts_with("250-") {
        ehlo.push(next().await);
    }
    assert!(
        !ehlo.iter().any(|l| l.contains("STARTTLS")),
        "no TLS configured: {ehlo:?}"
    );
    assert!(next().await.starts_with("250 2.1.0"));
    assert!(next().await.starts_with("250 2.1.5"));
    assert!(next().await.starts_with("354"));
    write
        .write_all(b"Subject: pipe\r\nMessage-ID: <pipe@remote.test>\r\n\r\n..dot\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    let stored = next().await;
    assert!(stored.starts_with("250 2.0.0 OK queued as "), "{stored}");
    assert!(next().await.starts_with("221"));
    running.await.unwrap();

    let id = stored.rsplit(' ').next().unwrap();
    let key = mairust_actors::storage::envelope::object_key(id);
    let body = std::fs::read(dir.path().join("objects").join(key)).unwrap();
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.starts_with("Received: from pipe.test ([192.0.2.7])"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n.dot\r\n"),
        "dot-unstuffed: {text:?}"
    );
}

/// A failure reported by a caller (a query that timed out waiting for a pool slot)
/// only makes the monitor probe; the database is marked down only by failed probes,
/// `health.failures_before_down` of them in a row.
#[actix_rt::test]
async fn only_failed_probes_mark_a_dependency_down() {
    use mairust_actors::health::ProbeNow;
    use mairust_actors::health_state::{Dependency, DependencyFailed};
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let db = common::database(&config, false).await;
    let bodies = BodyStore::create(&config.storage).unwrap();
    let health = Arc::new(HealthState::default());
    let monitor = HealthMonitor::new(
        health.clone(),
        db.clone(),
        bodies.clone(),
        config.health.clone(),
        "test".into(),
    )
    .start();
    for _ in 0..5 {
        monitor
            .send(DependencyFailed(Dependency::Database))
            .await
            .unwrap();
        assert!(health.accepting_mail(), "one failed call marked it down");
    }
    monitor.send(ProbeNow).await.unwrap();
    assert!(health.accepting_mail());

    // An object store the probe cannot write (its directory replaced by a file): down
    // after the confirming probe, while the database stays up.
    let objects = dir.path().join("objects");
    let _ = std::fs::remove_dir_all(&objects);
    std::fs::write(&objects, b"not a directory").unwrap();
    let health = Arc::new(HealthState::default());
    let mut three = config.health.clone();
    three.failures_before_down = 3;
    let monitor =
        HealthMonitor::new(health.clone(), db.clone(), bodies, three, "test".into()).start();
    let began = std::time::Instant::now();
    // A caller's report starts a probe; its failure alone leaves the store up until
    // the confirming probes (each at least 0.5 s later) fail too.
    monitor
        .send(DependencyFailed(Dependency::Storage))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert!(health.accepting_mail(), "one failed probe marked it down");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while health.accepting_mail() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !health.accepting_mail(),
        "a dead store was never marked down"
    );
    assert!(
        began.elapsed() >= std::time::Duration::from_millis(1000),
        "marked down after {:?}: the confirmations did not wait",
        began.elapsed()
    );
    assert!(!health.get(Dependency::Storage).up);
    assert!(health.get(Dependency::Database).up);
}

/// A client that always has bytes waiting (an endless line, never idle, never a reply
/// to read) still meets `max_session_seconds`.
#[actix_rt::test]
async fn a_client_that_never_stops_sending_meets_the_session_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.smtp.limits.max_session_seconds = 1;
    let config = Arc::new(config);
    let db = common::database(&config, false).await;
    let (ctx, _phase_tx) = session_context(config, &db);
    let session = Session::new(
        ctx,
        ListenerKind::Inbound,
        "192.0.2.8:4000".parse().unwrap(),
    );
    // Always readable (an endless line of `z`), always writable.
    let stream = tokio::io::join(tokio::io::repeat(b'z'), tokio::io::sink());
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        actix_rt::spawn(session.run(Box::new(stream))),
    )
    .await;
    assert!(ended.is_ok(), "the session outlived its lifetime");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "ended after {:?}",
        started.elapsed()
    );
}
