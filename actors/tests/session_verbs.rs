//! The SMTP session state machine driven one verb at a time over an in-memory pipe,
//! with no database, no socket and no object store: an in-memory [`Directory`] answers
//! who is local, an in-memory store actor takes what the pipeline stores, and each
//! step is `session.cmd("RSET", "250 2.0.0")` — the line sent and the start of the reply
//! expected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use futures::future::BoxFuture;
use mairust_actors::accounts::{self, LocalRecipient, RecipientLookup};
use mairust_actors::audit::AuditLog;
use mairust_actors::config::Config;
use mairust_actors::health_state::{Dependency, DependencyFailed, HealthState};
use mairust_actors::hooks::HookDispatcher;
use mairust_actors::limits::NodeLimits;
use mairust_actors::net::ListenerKind;
use mairust_actors::proto::Address;
use mairust_actors::shutdown::Phase;
use mairust_actors::smtp::session::{Session, SessionContext};
use mairust_actors::storage::{IncomingMessage, StoreError, StoreMessage};
use mairust_actors::submission::{Directory, Pipeline};
use mairust_entities::user;
use sea_orm::DbErr;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, WriteHalf};

mod common;

/// Users of example.test, by address; each has an INBOX with the user's id.
#[derive(Default)]
struct MemoryDirectory {
    users: HashMap<String, user::Model>,
    /// Every answer fails, as with the database down.
    down: AtomicBool,
}

impl MemoryDirectory {
    fn with_user(mut self, address: &str, password: &str, disabled: bool) -> Self {
        let id = self.users.len() as i64 + 1;
        self.users.insert(
            address.to_string(),
            user::Model {
                id,
                domain_id: 1,
                address: address.to_string(),
                password_hash: accounts::hash_password(password).unwrap(),
                disabled,
                admin: false,
                created_at: chrono::Utc::now().into(),
            },
        );
        self
    }

    fn answer<T>(&self, value: T) -> Result<T, DbErr> {
        if self.down.load(Ordering::SeqCst) {
            return Err(DbErr::Custom("the directory is down".into()));
        }
        Ok(value)
    }
}

impl Directory for MemoryDirectory {
    fn recipient<'a>(
        &'a self,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<RecipientLookup, DbErr>> {
        let lookup = match self.users.get(&address.key()) {
            Some(u) if !u.disabled => RecipientLookup::Local(LocalRecipient {
                address: u.address.clone(),
                user_id: u.id,
                inbox_id: u.id,
            }),
            _ if address.domain.eq_ignore_ascii_case("example.test") => {
                RecipientLookup::UnknownUser
            }
            _ => RecipientLookup::Remote,
        };
        Box::pin(async move { self.answer(lookup) })
    }

    fn user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<user::Model>, DbErr>> {
        Box::pin(async move { self.answer(self.users.get(key).cloned()) })
    }

    fn is_local_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<bool, DbErr>> {
        Box::pin(async move { self.answer(domain.eq_ignore_ascii_case("example.test")) })
    }

    fn mailbox<'a>(
        &'a self,
        user_id: i64,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, DbErr>> {
        // Each user's only mailbox has the user's id (see `recipient`).
        Box::pin(async move { self.answer(Some(user_id)) })
    }
}

/// Keeps what it is asked to store, or fails each request while `failing`.
struct MemoryStore {
    stored: Arc<Mutex<Vec<IncomingMessage>>>,
    failing: Arc<AtomicBool>,
}

impl Actor for MemoryStore {
    type Context = Context<Self>;
}

impl Handler<StoreMessage> for MemoryStore {
    type Result = Result<(), StoreError>;

    fn handle(
        &mut self,
        StoreMessage(message, _): StoreMessage,
        _: &mut Context<Self>,
    ) -> Self::Result {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Database("the store is down".into()));
        }
        self.stored.lock().unwrap().push(message);
        Ok(())
    }
}

/// Counts the failures reported to the HealthMonitor.
struct Monitor(Arc<AtomicUsize>);

impl Actor for Monitor {
    type Context = Context<Self>;
}

impl Handler<DependencyFailed> for Monitor {
    type Result = ();

    fn handle(&mut self, DependencyFailed(dependency): DependencyFailed, _: &mut Context<Self>) {
        assert_eq!(dependency, Dependency::Database);
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What sessions share, all in memory, and the handles a test turns.
struct Node {
    ctx: Arc<SessionContext>,
    stored: Arc<Mutex<Vec<IncomingMessage>>>,
    store_failing: Arc<AtomicBool>,
    directory: Arc<MemoryDirectory>,
    health: Arc<HealthState>,
    failures_reported: Arc<AtomicUsize>,
    _phase: tokio::sync::watch::Sender<Phase>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new(configure: impl FnOnce(&mut Config)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::config(dir.path());
        config.server.hostname = "mx.example.test".into();
        configure(&mut config);
        let config = Arc::new(config);
        let directory = Arc::new(
            MemoryDirectory::default()
                .with_user("bob@example.test", "bob-secret", false)
                .with_user("carol@example.test", "carol-secret", false)
                .with_user("gone@example.test", "gone-secret", true),
        );
        let stored = Arc::new(Mutex::new(Vec::new()));
        let store_failing = Arc::new(AtomicBool::new(false));
        let store = MemoryStore {
            stored: stored.clone(),
            failing: store_failing.clone(),
        }
        .start();
        let failures_reported = Arc::new(AtomicUsize::new(0));
        let monitor = Monitor(failures_reported.clone()).start();
        let health = Arc::new(HealthState::default());
        let hooks = Arc::new(HookDispatcher::new(&[], Default::default()).unwrap());
        let pipeline = Arc::new(Pipeline {
            config: config.clone(),
            directory: directory.clone(),
            storage: store.recipient(),
            hooks,
            health: health.clone(),
            health_monitor: monitor.recipient(),
            dkim: None,
            sender_auth: None,
            spam: None,
            send_limits: None,
        });
        // No database: audit entries go to the log only (their insert fails quietly).
        let audit = AuditLog::open(&Default::default(), Default::default(), "test").unwrap();
        let (phase, shutdown) = tokio::sync::watch::channel(Phase::Running);
        let ctx = Arc::new(SessionContext {
            limits: NodeLimits::new(&config),
            config,
            pipeline,
            tls: None,
            shutdown,
            audit,
        });
        Node {
            ctx,
            stored,
            store_failing,
            directory,
            health,
            failures_reported,
            _phase: phase,
            _dir: dir,
        }
    }
}

/// A session on `listener` and the client end of its pipe.
struct Harness {
    write: WriteHalf<tokio::io::DuplexStream>,
    lines: Lines<BufReader<ReadHalf<tokio::io::DuplexStream>>>,
    node: Node,
}

impl std::ops::Deref for Harness {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Harness {
    async fn start(listener: ListenerKind, configure: impl FnOnce(&mut Config)) -> Harness {
        let node = Node::new(configure);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let session = Session::new(
            node.ctx.clone(),
            listener,
            "192.0.2.7:4000".parse().unwrap(),
        );
        actix_rt::spawn(session.run(Box::new(server)));
        let (read, write) = tokio::io::split(client);
        let mut harness = Harness {
            write,
            lines: BufReader::new(read).lines(),
            node,
        };
        let greeting = harness.reply().await;
        assert_eq!(greeting, ["220 mx.example.test ESMTP MaiRust"]);
        harness
    }

    /// One whole reply, every line of it.
    async fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line =
                tokio::time::timeout(std::time::Duration::from_secs(10), self.lines.next_line())
                    .await
                    .expect("no reply within 10 s")
                    .unwrap()
                    .expect("the session closed the connection");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// Sends `line` and checks that the (last line of the) reply starts with `expect`.
    async fn cmd(&mut self, line: &str, expect: &str) -> Vec<String> {
        self.write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let reply = self.reply().await;
        assert!(
            reply.last().unwrap().starts_with(expect),
            "{line:?}: expected {expect:?}, got {reply:?}"
        );
        reply
    }

    /// Sends a message body after 354 and checks the reply to its end.
    async fn body(&mut self, text: &str, expect: &str) -> String {
        self.write
            .write_all(format!("{text}\r\n.\r\n").as_bytes())
            .await
            .unwrap();
        let reply = self.reply().await.pop().unwrap();
        assert!(
            reply.starts_with(expect),
            "expected {expect:?}, got {reply:?}"
        );
        reply
    }

    /// The session has closed the connection.
    async fn closed(&mut self) {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("still open after 10 s");
        assert!(matches!(next, Ok(None)), "not closed: {next:?}");
    }

    fn stored(&self) -> Vec<IncomingMessage> {
        self.stored.lock().unwrap().clone()
    }
}

async fn inbound() -> Harness {
    Harness::start(ListenerKind::Inbound, |_| {}).await
}

#[actix_rt::test]
async fn ehlo_helo_and_the_simple_verbs() {
    let mut s = inbound().await;
    let ehlo = s.cmd("EHLO client.test", "250 ").await;
    assert_eq!(ehlo[0], "250-mx.example.test Hello client.test [192.0.2.7]");
    for extension in ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"] {
        assert!(ehlo.iter().any(|l| l.ends_with(extension)), "{ehlo:?}");
    }
    assert!(
        !ehlo
            .iter()
            .any(|l| l.contains("STARTTLS") || l.contains("AUTH")),
        "{ehlo:?}"
    );
    s.cmd("HELO client.test", "250 mx.example.test Hello client.test")
        .await;
    s.cmd("EHLO", "501 5.5.4").await;
    s.cmd("NOOP", "250 2.0.0").await;
    s.cmd("VRFY bob", "252 2.5.0").await;
    s.cmd("HELP", "214 2.0.0").await;
    s.cmd("RSET", "250 2.0.0").await;
    s.cmd("STARTTLS", "454 4.7.0").await;
    s.cmd("AUTH PLAIN", "503 5.5.1").await;
    s.cmd("FROB", "500 5.5.2").await;
    s.cmd("QUIT", "221 2.0.0").await;
    s.closed().await;
}

#[actix_rt::test]
async fn mail_wants_helo_once_and_a_size_that_fits() {
    let mut s = Harness::start(ListenerKind::Inbound, |c| {
        c.smtp.limits.max_message_size = 1000;
    })
    .await;
    s.cmd("MAIL FROM:<a@remote.test>", "503 5.5.1").await;
    s.cmd("EHLO client.test", "250 ").await;
    s.cmd("MAIL FROM:<a@remote.test> SIZE=1001", "552 5.3.4")
        .await;
    s.cmd("MAIL FROM:<a@remote.test> SIZE=1000", "250 2.1.0")
        .await;
    s.cmd("MAIL FROM:<a@remote.test>", "503 5.5.1").await;
    s.cmd("RSET", "250 2.0.0").await;
    s.cmd("MAIL FROM:<>", "250 2.1.0").await;
}

#[actix_rt::test]
async fn rcpt_follows_the_recipient_policy() {
    let mut s = Harness::start(ListenerKind::Inbound, |c| {
        c.smtp.limits.max_recipients = 3;
    })
    .await;
    s.cmd("EHLO client.test", "250 ").await;
    s.cmd("RCPT TO:<bob@example.test>", "503 5.5.1").await;
    s.cmd("MAIL FROM:<a@remote.test>", "250 2.1.0").await;
    s.cmd("RCPT TO:<nobody@example.test>", "550 5.1.1").await;
    s.cmd("RCPT TO:<gone@example.test>", "550 5.1.1").await;
    s.cmd(
        "RCPT TO:<someone@elsewhere.test>",
        "550 5.7.1 Relaying denied",
    )
    .await;
    s.cmd("RCPT TO:<bob@example.test>", "250 2.1.5").await;
    s.cmd("RCPT TO:<BOB@Example.Test>", "250 2.1.5").await;
    s.cmd("RCPT TO:<carol@example.test>", "250 2.1.5").await;
    // Three admitted, duplicates counted (as RCPT commands are).
    s.cmd("RCPT TO:<carol@example.test>", "452 4.5.3").await;
    s.cmd("DATA", "354").await;
    s.body("Subject: two\r\n\r\nhello", "250 2.0.0 OK queued as ")
        .await;
    let stored = s.stored();
    let users: Vec<&str> = stored[0]
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(
        users,
        ["bob@example.test", "carol@example.test"],
        "each user once"
    );
    assert!(stored[0].outbound.is_empty());
}

#[actix_rt::test]
async fn a_directory_failure_is_temporary_and_reported() {
    let mut s = inbound().await;
    s.cmd("EHLO client.test", "250 ").await;
    s.cmd("MAIL FROM:<a@remote.test>", "250 2.1.0").await;
    s.directory.down.store(true, Ordering::SeqCst);
    s.cmd("RCPT TO:<bob@example.test>", "451 4.3.0").await;
    assert_eq!(s.failures_reported.load(Ordering::SeqCst), 1);
    s.directory.down.store(false, Ordering::SeqCst);
    s.cmd("RCPT TO:<bob@example.test>", "250 2.1.5").await;
}

#[actix_rt::test]
async fn data_stores_the_message_with_our_received_header() {
    let mut s = inbound().await;
    s.cmd("DATA", "503 5.5.1").await;
    s.cmd("EHLO client.test", "250 ").await;
    s.cmd("MAIL FROM:<a@remote.test>", "250 2.1.0").await;
    s.cmd("DATA", "503 5.5.1 Need RCPT").await;
    s.cmd("RCPT TO:<bob@example.test>", "250 2.1.5").await;
    s.cmd("DATA", "354").await;
    let reply = s
        .body(
            "Subject: hi\r\nMessage-ID: <m1@remote.test>\r\n\r\n..dot\r\nend",
            "250 2.0.0",
        )
        .await;
    let stored = s.stored();
    assert_eq!(stored.len(), 1);
    let message = &stored[0];
    assert!(reply.ends_with(&message.id), "{reply}");
    let text = String::from_utf8(message.body.to_vec()).unwrap();
    let received = format!(
        "Received: from client.test ([192.0.2.7])\r\n\tby mx.example.test (MaiRust) with ESMTP id {}\r\n\tfor <bob@example.test>;\r\n\t",
        message.id
    );
    assert!(text.starts_with(&received), "{text:?}");
    assert!(
        text.ends_with("\r\n\r\n.dot\r\nend\r\n"),
        "dot-unstuffed: {text:?}"
    );
    assert_eq!(message.envelope_from, "a@remote.test");
    assert_eq!(message.listener, "inbound");
    assert_eq!(message.meta.message_id.as_deref(), Some("m1@remote.test"));
    assert_eq!(message.submitted_by, None);
    // The transaction is over: a new one needs MAIL again.
    s.cmd("RCPT TO:<bob@example.test>", "503 5.5.1").await;
}

#[actix_rt::test]
async fn nothing_is_acknowledged_that_was_not_stored() {
    let mut s = inbound().await;
    s.cmd("EHLO client.test", "250 ").await;
    s.cmd("MAIL FROM:<a@remote.test>", "250 2.1.0").await;
    s.cmd("RCPT TO:<bob@example.test>", "250 2.1.5").await;
    s.cmd("DATA", "354").await;
    s.store_failing.store(true, Ordering::SeqCst);
    s.body("Subject: lost?\r\n\r\nno", "451 4.3.0").await;
    assert!(s.stored().is_empty());

    s.store_failing.store(false, Ordering::SeqCst);
    s.cmd("MAIL FROM:<a@remote.test>", "250 2.1.0").await;
    s.cmd("RCPT TO:<bob@example.test>", "250 2.1.5").await;
    s.cmd("DATA", "354").await;
    s.body("Subject: kept\r\n\r\nyes", "250 2.0.0").await;
    assert_eq!(s.stored().len(), 1);

    // The store filled during the transaction: the end of DATA says so (452), and a
    // new transaction is refused at MAIL until there is room again.
    s.cmd("MAIL FROM:<a@remote.test>", "250 2.1.0").await;
    s.cmd("RCPT TO:<bob@example.test>", "250 2.1.5").await;
    s.cmd("DATA", "354").await;
    s.health.set_storage_limit(1000);
    s.health.set_storage_bytes(1000);
    s.body("Subject: no room\r\n\r\nfull", "452 4.3.1").await;
    assert_eq!(s.stored().len(), 1);
    s.cmd("MAIL FROM:<a@remote.test>", "452 4.3.1").await;
    s.health.set_storage_bytes(999);
    s.cmd("MAIL FROM:<a@remote.test>", "250 2.1.0").await;
    s.cmd("RSET", "250 2.0.0").await;

    // A dependency down: no new transaction begins.
    s.health.mark_down(Dependency::Storage);
    s.cmd("MAIL FROM:<a@remote.test>", "451 4.3.0").await;
}

#[actix_rt::test]
async fn too_many_bad_commands_end_the_session() {
    let mut s = Harness::start(ListenerKind::Inbound, |c| {
        c.smtp.limits.max_bad_commands = 3;
    })
    .await;
    s.cmd("FROB", "500").await;
    s.cmd("MAIL FROM:<a@remote.test>", "503").await;
    s.write.write_all(b"RCPT TO:<x@y.test>\r\n").await.unwrap();
    let reply = s.reply().await;
    assert!(reply[0].starts_with("503"), "{reply:?}");
    assert_eq!(
        s.reply().await,
        ["421 4.7.0 Too many errors, closing transmission channel"]
    );
    s.closed().await;
}

/// Submission over plain text (allowed for this test): AUTH first, then the account's
/// own sender only, relaying to other domains, and the From: header checked at the end.
#[actix_rt::test]
async fn authenticated_submission() {
    let mut s = Harness::start(ListenerKind::Submission, |c| {
        c.smtp.allow_plaintext_auth = true;
    })
    .await;
    let ehlo = s.cmd("EHLO laptop", "250 ").await;
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    s.cmd("MAIL FROM:<bob@example.test>", "530 5.7.0").await;
    s.cmd("AUTH CRAM-MD5", "504 5.5.4").await;
    // bob@example.test / wrong
    s.cmd("AUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAd3Jvbmc=", "535 5.7.8")
        .await;
    // LOGIN in steps: the user name, then the password.
    s.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    s.cmd("Ym9iQGV4YW1wbGUudGVzdA==", "334 UGFzc3dvcmQ6").await;
    s.cmd("Ym9iLXNlY3JldA==", "235 2.7.0").await;
    s.cmd("AUTH PLAIN", "503 5.5.1 Already").await;
    s.cmd("MAIL FROM:<carol@example.test>", "553 5.7.1").await;
    s.cmd("MAIL FROM:<>", "553 5.7.1").await;
    s.cmd("MAIL FROM:<Bob@Example.test>", "250 2.1.0").await;
    s.cmd("RCPT TO:<friend@remote.test>", "250 2.1.5").await;
    s.cmd("RCPT TO:<Friend@remote.test>", "250 2.1.5").await;
    s.cmd("RCPT TO:<carol@example.test>", "250 2.1.5").await;
    s.cmd("DATA", "354").await;
    s.body(
        "From: <carol@example.test>\r\nSubject: spoof\r\n\r\nx",
        "550 5.7.1",
    )
    .await;
    assert!(s.stored().is_empty());

    s.cmd("MAIL FROM:<bob@example.test>", "250 2.1.0").await;
    s.cmd("RCPT TO:<friend@remote.test>", "250 2.1.5").await;
    s.cmd("DATA", "354").await;
    s.body(
        "From: Bob <bob@example.test>\r\nSubject: out\r\n\r\nx",
        "250 2.0.0",
    )
    .await;
    let stored = s.stored();
    let message = &stored[0];
    assert_eq!(message.submitted_by.as_deref(), Some("bob@example.test"));
    assert_eq!(message.listener, "submission");
    assert_eq!(message.outbound.len(), 1);
    assert_eq!(message.outbound[0].to_string(), "friend@remote.test");
    let text = String::from_utf8(message.body.to_vec()).unwrap();
    assert!(
        text.starts_with("Received: from laptop ([192.0.2.7]) (authenticated as bob@example.test)\r\n\tby mx.example.test (MaiRust) with ESMTPA id "),
        "{text:?}"
    );
}

/// A disabled account cannot log in, and its failure looks like a wrong password.
#[actix_rt::test]
async fn a_disabled_account_cannot_log_in() {
    let mut s = Harness::start(ListenerKind::Submission, |c| {
        c.smtp.allow_plaintext_auth = true;
    })
    .await;
    s.cmd("EHLO laptop", "250 ").await;
    // gone@example.test / gone-secret
    s.cmd(
        "AUTH PLAIN AGdvbmVAZXhhbXBsZS50ZXN0AGdvbmUtc2VjcmV0",
        "535 5.7.8",
    )
    .await;
    s.cmd("MAIL FROM:<gone@example.test>", "530 5.7.0").await;
}

/// A client that always has bytes waiting (an endless line, never idle, never a reply
/// to read) still meets `max_session_seconds`.
#[actix_rt::test]
async fn a_client_that_never_stops_sending_meets_the_session_lifetime() {
    let node = Node::new(|c| c.smtp.limits.max_session_seconds = 1);
    let session = Session::new(
        node.ctx.clone(),
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
