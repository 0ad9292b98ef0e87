//! The StorageActor's tests' setup: a temporary SQLite database (Parallel mode) with
//! bob, the object store, messages, and ways to break the object lane.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use mairust_actors::accounts::{self, LocalRecipient, RecipientLookup};
use mairust_actors::health_state::DependencyFailed;
use mairust_actors::proto::Address;
use mairust_actors::storage::identity;
use mairust_actors::storage::{BodyStore, CommitMode, IncomingMessage, QueueHook, StorageActor};
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};

use super::config;

/// Forwards every dependency failure the StorageActor reports.
pub struct FailureSink(pub tokio::sync::mpsc::UnboundedSender<DependencyFailed>);

impl Actor for FailureSink {
    type Context = Context<Self>;
}

impl Handler<DependencyFailed> for FailureSink {
    type Result = ();
    fn handle(&mut self, msg: DependencyFailed, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub root: std::path::PathBuf,
    pub db: DatabaseConnection,
    pub bodies: BodyStore,
    pub bob: LocalRecipient,
    pub config: mairust_actors::config::Config,
}

pub async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let db = super::database(&config, true).await;
    let bob = match accounts::lookup_recipient(&db, &Address::parse("bob@example.test").unwrap())
        .await
        .unwrap()
    {
        RecipientLookup::Local(bob) => bob,
        other => panic!("bob is not local: {other:?}"),
    };
    let bodies = identity::open_verified(&config.storage, &db).await.unwrap();
    Setup {
        root: dir.path().join("objects"),
        _dir: dir,
        db,
        bodies,
        bob,
        config,
    }
}

/// The StorageActor (Parallel mode) on the setup, not started, and the dependency
/// failures it reports.
pub fn storage_actor(
    s: &Setup,
) -> (
    StorageActor,
    tokio::sync::mpsc::UnboundedReceiver<DependencyFailed>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let failures = FailureSink(tx).start();
    let actor = StorageActor::new(
        s.db.clone(),
        s.bodies.clone(),
        CommitMode::Parallel,
        failures.recipient(),
        QueueHook {
            max_age: Duration::from_secs(3600),
            wakeup: Arc::new(tokio::sync::Notify::new()),
        },
    );
    (actor, rx)
}

/// [`storage_actor`], started.
pub fn storage(
    s: &Setup,
) -> (
    Addr<StorageActor>,
    tokio::sync::mpsc::UnboundedReceiver<DependencyFailed>,
) {
    let (actor, rx) = storage_actor(s);
    (actor.start(), rx)
}

/// Stores a new message (see [`message`]) and returns its id once it is stored.
pub async fn store_ok(actor: &Addr<StorageActor>, s: &Setup, subject: &str) -> String {
    let m = message(s, subject);
    let id = m.id.clone();
    actor
        .send(mairust_actors::storage::StoreMessage::new(m))
        .await
        .unwrap()
        .expect("stored");
    id
}

/// A message for bob that also goes to a remote recipient (a queue entry).
pub fn message(s: &Setup, subject: &str) -> IncomingMessage {
    let id = uuid::Uuid::now_v7().to_string();
    let body = format!("From: alice@example.test\r\nSubject: {subject}\r\n\r\nhello\r\n");
    IncomingMessage::new(
        id,
        body.into_bytes(),
        "alice@example.test".into(),
        vec![s.bob.clone()],
        "inbound",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        vec![Address::parse("carol@remote.test").unwrap()],
    )
}

pub async fn count<E>(db: &DatabaseConnection, _: E) -> u64
where
    E: EntityTrait,
    E::Model: Sync,
{
    E::find().count(db).await.unwrap()
}

/// Breaks the object lane: its temporary directory becomes a file.
pub fn break_objects(root: &std::path::Path) {
    let tmp = root.join(".tmp");
    if tmp.is_dir() {
        std::fs::remove_dir_all(&tmp).unwrap();
    }
    std::fs::write(&tmp, b"not a directory").unwrap();
}

pub fn mend_objects(root: &std::path::Path) {
    std::fs::remove_file(root.join(".tmp")).unwrap();
}

pub async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
