//! Failure behaviour (SPEC M4, O8, O11): dependency outages give 451 and heal without a
//! restart; SIGTERM lets open transactions finish; SIGKILL never loses a message that
//! was answered 250.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::raw::RawClient;
use common::{Backend, Options, S3Target, TestServer, eventually, message};

async fn transaction_reply(server: &TestServer, message_id: &str) -> u16 {
    let (mut c, greeting) = RawClient::connect(server.inbound).await;
    assert_eq!(greeting.code, 220);
    c.expect("EHLO client.test", 250).await;
    let r = c.cmd("MAIL FROM:<s@remote.test>").await;
    if r.code != 250 {
        assert!(r.text.starts_with("4.3.0"), "{} {}", r.code, r.text);
        return r.code;
    }
    let r = c.cmd("RCPT TO:<bob@example.test>").await;
    if r.code != 250 {
        return r.code;
    }
    let r = c.cmd("DATA").await;
    if r.code != 354 {
        return r.code;
    }
    c.send(message("s@remote.test", "bob@example.test", message_id, "x").as_bytes())
        .await;
    c.send(b".\r\n").await;
    c.reply().await.unwrap().code
}

#[tokio::test]
async fn storage_outage_tempfails_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::new(dir.path());
    let s3 = backend.s3.is_some();
    let mut moto = None;
    let storage_yaml = if s3 {
        let m = Moto::start(common::free_port(), "outage");
        let yaml = common::s3_yaml(&S3Target {
            endpoint: format!("http://127.0.0.1:{}", m.port),
            bucket: "outage".into(),
            prefix: "p".into(),
        });
        moto = Some(m);
        Some(yaml)
    } else {
        None
    };
    let server = TestServer::start_on(dir, backend, Options::default(), storage_yaml);
    assert_eq!(transaction_reply(&server, "before@remote.test").await, 250);

    // Take the object store away.
    let objects = server.dir.path().join("objects");
    let port = moto.as_ref().map(|m| m.port);
    // moto keeps nothing when stopped; a real S3 comes back with its objects, the
    // store's identity marker among them (without it the store stays refused).
    let store = mairust_actors::storage::BodyStore::open(
        &common::mairust_actors_config(&server.config_path).storage,
    )
    .unwrap();
    let marker_key = mairust_actors::storage::bodies::MARKER_KEY;
    let marker = store.get(marker_key).await.expect("the identity marker");
    if s3 {
        drop(moto.take());
    } else {
        std::fs::rename(&objects, server.dir.path().join("objects.away")).unwrap();
        std::fs::write(&objects, b"not a directory").unwrap();
    }
    assert!(
        server.wait_ready_status(503, Duration::from_secs(10)).await,
        "ready did not turn 503"
    );
    let (_, body) = server.http_get("/health/ready").await;
    assert_eq!(body["checks"]["storage"]["status"], "unhealthy", "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(transaction_reply(&server, "during@remote.test").await, 451);

    // Bring it back: the server notices by itself.
    if let Some(port) = port {
        moto = Some(Moto::start(port, "outage"));
        store.put(marker_key, marker).await.unwrap();
    } else {
        std::fs::remove_file(&objects).unwrap();
        std::fs::rename(server.dir.path().join("objects.away"), &objects).unwrap();
    }
    assert!(
        server.wait_ready_status(200, Duration::from_secs(10)).await,
        "ready did not recover"
    );
    assert_eq!(transaction_reply(&server, "after@remote.test").await, 250);
    assert_eq!(server.messages_with_id("after@remote.test").await.len(), 1);
    assert!(
        server
            .messages_with_id("during@remote.test")
            .await
            .is_empty()
    );
    drop(moto);
}

#[tokio::test]
async fn database_outage_tempfails_and_recovers_without_restart() {
    if !common::backend_available(
        common::postgres_url().is_some(),
        "MAIRUST_TEST_POSTGRES_URL (the database outage test runs on PostgreSQL)",
    ) {
        return;
    }
    let server = TestServer::start();
    assert_eq!(
        transaction_reply(&server, "db-before@remote.test").await,
        250
    );
    server.backend.pg_block(true);
    assert!(server.wait_ready_status(503, Duration::from_secs(10)).await);
    let (_, body) = server.http_get("/health/ready").await;
    assert_eq!(body["status"], "unhealthy", "{body}");
    let code = transaction_reply(&server, "db-during@remote.test").await;
    assert_eq!(code, 451);
    server.backend.pg_block(false);
    assert!(
        server.wait_ready_status(200, Duration::from_secs(15)).await,
        "database recovery not noticed"
    );
    assert_eq!(
        transaction_reply(&server, "db-after@remote.test").await,
        250
    );
}

#[tokio::test]
async fn sigterm_lets_an_open_transaction_finish() {
    let mut server = TestServer::start();
    let (mut open, _) = RawClient::connect(server.inbound).await;
    open.begin_data("bob@example.test").await;
    open.send(b"Subject: drain\r\nMessage-ID: <drain@remote.test>\r\n\r\nfirst half\r\n")
        .await;
    let (mut idle, _) = RawClient::connect(server.inbound).await;
    idle.expect("EHLO idle.test", 250).await;

    server.signal(libc::SIGTERM);
    // Load balancers see the node leave at once (no close delay configured).
    assert!(
        server.wait_ready_status(503, Duration::from_secs(1)).await,
        "readiness still 200 after SIGTERM"
    );
    // The idle session is told to go away; new connections are not accepted.
    let r = idle.reply().await.expect("421 to idle session");
    assert_eq!(r.code, 421, "{}", r.text);
    assert!(
        listener_closes(server.inbound, Duration::from_secs(5)).await,
        "listener still accepting"
    );
    // The open transaction completes normally.
    open.send(b"second half\r\n.\r\n").await;
    let r = open.reply().await.unwrap();
    assert_eq!(r.code, 250, "{}", r.text);
    open.expect("QUIT", 221).await;
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(server.messages_with_id("drain@remote.test").await.len(), 1);
}

/// Whether connections to `addr` are refused within `within` (the listener closed).
async fn listener_closes(addr: std::net::SocketAddr, within: Duration) -> bool {
    eventually(within, || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await
}

/// The datagrams a `Type=notify` service manager would get, read as they come (like
/// systemd, which never lets the server's sends block) by a thread of the test.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (into, stopped) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    into.lock().unwrap().push(text);
                }
            }
        });
        NotifySocket {
            _dir: dir,
            path,
            received,
            stop,
        }
    }

    /// Waits up to `timeout` for a datagram holding the line `line`; returns that
    /// datagram.
    async fn wait_for(&self, line: &str, timeout: Duration) -> Result<String, Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.received.lock().unwrap().clone();
            if let Some(d) = seen.iter().find(|d| d.lines().any(|l| l == line)) {
                return Ok(d.clone());
            }
            if Instant::now() >= deadline {
                return Err(seen);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `Type=notify` (systemd): READY=1 once the listeners are bound, STOPPING=1 when the
/// shutdown begins. With a close delay, readiness is 503 within 1 s of SIGTERM while new
/// connections are still served; then the listeners close and the open transaction
/// still finishes.
#[tokio::test]
async fn sigterm_with_close_delay_unready_first_then_drain() {
    let notify = NotifySocket::bind();
    let mut server = TestServer::start_with(Options {
        close_delay_seconds: 3,
        env: vec![
            ("NOTIFY_SOCKET".into(), notify.path.display().to_string()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..Options::default()
    });
    let ready = notify
        .wait_for("READY=1", Duration::from_secs(10))
        .await
        .expect("READY=1");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=serving: inbound 127.0.0.1:")),
        "{ready:?}"
    );
    // The watchdog is armed: WATCHDOG_USEC/2 between pings.
    notify
        .wait_for("WATCHDOG=1", Duration::from_secs(2))
        .await
        .expect("WATCHDOG=1");
    assert_eq!(server.http_get("/health/ready").await.0, 200);

    let (mut open, _) = RawClient::connect(server.inbound).await;
    open.begin_data("bob@example.test").await;
    open.send(b"Subject: delay\r\nMessage-ID: <delay@remote.test>\r\n\r\nfirst half\r\n")
        .await;
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_ready_status(503, Duration::from_secs(1)).await,
        "readiness still 200 a second after SIGTERM"
    );
    let (_, body) = server.http_get("/health/ready").await;
    assert_eq!(body["status"], "draining", "{body}");
    assert_eq!(body["checks"]["smtp"]["draining"], true, "{body}");
    notify
        .wait_for("STOPPING=1", Duration::from_secs(1))
        .await
        .expect("STOPPING=1");
    // Within the close delay a new client is still served in full.
    assert!(signalled.elapsed() < Duration::from_secs(2));
    assert_eq!(
        transaction_reply(&server, "during-delay@remote.test").await,
        250
    );
    // Then the listeners close, not before the delay.
    assert!(
        listener_closes(server.inbound, Duration::from_secs(8)).await,
        "listener still accepting after the close delay"
    );
    assert!(
        signalled.elapsed() >= Duration::from_millis(2900),
        "listeners closed before the close delay: {:?}",
        signalled.elapsed()
    );
    open.send(b"second half\r\n.\r\n").await;
    let r = open.reply().await.unwrap();
    assert_eq!(r.code, 250, "{}", r.text);
    open.expect("QUIT", 221).await;
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(server.messages_with_id("delay@remote.test").await.len(), 1);
    assert_eq!(
        server
            .messages_with_id("during-delay@remote.test")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn sigterm_timeout_closes_stuck_sessions_with_421() {
    let mut server = TestServer::start_with(Options {
        shutdown_timeout_seconds: 1,
        ..Options::default()
    });
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<s@remote.test>", 250).await;
    let start = Instant::now();
    server.signal(libc::SIGTERM);
    let r = c.reply().await.expect("421 after the timeout");
    assert_eq!(r.code, 421);
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_message() {
    let mut server = TestServer::start();
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..8 {
        let (addr, acked, stop) = (server.inbound, acknowledged.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            'outer: while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                    break;
                };
                drop(stream);
                let (mut c, _) = RawClient::connect(addr).await;
                if c.cmd("EHLO crash.test").await.code != 250 {
                    break;
                }
                for _ in 0..20 {
                    n += 1;
                    let id = format!("crash-{client}-{n}@remote.test");
                    c.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
                        .await;
                    let (Some(a), Some(b), Some(d)) =
                        (c.reply().await, c.reply().await, c.reply().await)
                    else {
                        break 'outer;
                    };
                    if (a.code, b.code, d.code) != (250, 250, 354) {
                        break 'outer;
                    }
                    c.send(
                        format!(
                            "{}.\r\n",
                            message("s@remote.test", "bob@example.test", &id, "crash test body")
                        )
                        .as_bytes(),
                    )
                    .await;
                    match c.reply().await {
                        Some(r) if r.code == 250 => acked.lock().unwrap().push(id),
                        _ => break 'outer,
                    }
                }
            }
        }));
    }
    // Let mail flow, then kill the server mid-stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().unwrap().len() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(5));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 50,
        "too few messages before the kill: {}",
        acked.len()
    );
    // SQLite + fs: bodies go into files made ahead at their place; the kill leaves the
    // unused ones, empty, which the next start removes before any new one is made.
    let placed = common::postgres_url().is_none() && server.backend.s3.is_none();
    let messages = server.dir.path().join("objects").join("messages");
    if placed {
        assert!(empty_files(&messages) > 0, "no file was made ahead");
    }

    server.spawn();
    if placed {
        assert_eq!(
            empty_files(&messages),
            0,
            "files made ahead outlived the kill"
        );
        assert!(server.log_contains("spares_removed"));
    }
    let mut missing = Vec::new();
    for id in &acked {
        let rows = server.messages_with_id(id).await;
        let Some(row) = rows.first() else {
            missing.push(id.clone());
            continue;
        };
        let body = server.object(&row.object_key).await;
        match body {
            Some(b) if b.len() as i64 == row.size => {}
            _ => missing.push(format!("{id} (object)")),
        }
    }
    eprintln!(
        "crash test: {} acknowledged before SIGKILL, {} missing",
        acked.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

/// Empty files anywhere under `dir`.
fn empty_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| match e.file_type().unwrap().is_dir() {
            true => empty_files(&e.path()),
            false => usize::from(e.metadata().unwrap().len() == 0),
        })
        .sum()
}

#[tokio::test]
async fn restart_removes_rows_whose_object_never_reached_the_disk() {
    if common::postgres_url().is_some() {
        eprintln!("crash recovery of unflushed rows applies to SQLite (parallel flushes)");
        return;
    }
    let mut server = TestServer::start();
    assert_eq!(transaction_reply(&server, "kept@remote.test").await, 250);
    assert_eq!(transaction_reply(&server, "torn@remote.test").await, 250);
    assert_eq!(transaction_reply(&server, "cut@remote.test").await, 250);
    server.kill();
    // What a crash between the row flush and the object flush leaves behind: rows
    // still journalled as unflushed, one without its object, one whose body (written in
    // place) was cut short.
    let torn = server.messages_with_id("torn@remote.test").await.remove(0);
    let cut = server.messages_with_id("cut@remote.test").await.remove(0);
    let db = server.db().await;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    for row in [&torn, &cut] {
        mairust_entities::unflushed_message::Entity::insert(
            mairust_entities::unflushed_message::ActiveModel {
                message_id: Set(row.id.clone()),
                object_key: Set(row.object_key.clone()),
                created_at: Set(chrono::Utc::now().into()),
            },
        )
        // (still journalled if the kill came before the entry was cleared)
        .on_conflict_do_nothing_on([mairust_entities::unflushed_message::Column::MessageId])
        .exec(&db)
        .await
        .unwrap();
    }
    db.close().await.ok();
    let cut_body = server.object(&cut.object_key).await.unwrap();
    {
        let config = common::mairust_actors_config(&server.config_path);
        let store = mairust_actors::storage::BodyStore::open(&config.storage).unwrap();
        let half = bytes::Bytes::copy_from_slice(&cut_body[..cut_body.len() / 2]);
        store.put(&cut.object_key, half).await.unwrap();
    }
    if server.backend.s3.is_some() {
        let config = common::mairust_actors_config(&server.config_path);
        let store = mairust_actors::storage::BodyStore::open(&config.storage).unwrap();
        store.delete(&torn.object_key).await.unwrap();
    } else {
        std::fs::remove_file(server.dir.path().join("objects").join(&torn.object_key)).unwrap();
    }
    server.spawn();
    assert!(server.messages_with_id("torn@remote.test").await.is_empty());
    assert_eq!(
        server.index_count(&torn.id).await,
        0,
        "mailbox entry left behind"
    );
    assert!(server.messages_with_id("cut@remote.test").await.is_empty());
    assert_eq!(server.index_count(&cut.id).await, 0);
    assert!(
        server.object(&cut.object_key).await.is_none(),
        "the cut body outlived its rows"
    );
    let kept = server.messages_with_id("kept@remote.test").await;
    assert_eq!(kept.len(), 1);
    assert!(server.object(&kept[0].object_key).await.is_some());
    assert!(server.log_contains("unflushed_row_removed"));
}

#[tokio::test]
async fn locked_sqlite_database_tempfails_and_recovers_without_restart() {
    if common::postgres_url().is_some() {
        eprintln!("this outage is SQLite's: another process holding the write lock");
        return;
    }
    let server = TestServer::start();
    assert_eq!(
        transaction_reply(&server, "lock-before@remote.test").await,
        250
    );
    // Another process takes the write lock and keeps it (a stuck tool, a backup ...).
    let mut options = sea_orm::ConnectOptions::new(server.backend.db_url.clone());
    options.max_connections(1).min_connections(1);
    let locker = sea_orm::Database::connect(options).await.unwrap();
    use sea_orm::ConnectionTrait;
    locker.execute_unprepared("BEGIN EXCLUSIVE").await.unwrap();
    let started = Instant::now();
    assert_eq!(
        transaction_reply(&server, "lock-during@remote.test").await,
        451
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "tempfail took too long"
    );
    locker.execute_unprepared("COMMIT").await.unwrap();
    locker.close().await.ok();
    assert!(server.wait_ready_status(200, Duration::from_secs(10)).await);
    assert_eq!(
        transaction_reply(&server, "lock-after@remote.test").await,
        250
    );
    assert!(
        server
            .messages_with_id("lock-during@remote.test")
            .await
            .is_empty()
    );
    assert_eq!(
        server
            .messages_with_id("lock-after@remote.test")
            .await
            .len(),
        1
    );
}
