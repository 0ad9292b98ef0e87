//! A StorageActor restarted while its row transaction is in flight (Parallel mode):
//! the transaction is a task of its own, so it may still commit after the restart; the
//! restart's journal recovery waits for it, so rows committed for a message whose body
//! never landed are removed, not left behind. Needs the `failpoints` feature (the
//! workspace's test build has it): the actor panics through `storage_batch`. A test
//! binary of its own, so no other test meets the armed failpoint.
#![cfg(feature = "failpoints")]

use std::time::Duration;

use actix::prelude::*;
use mairust_actors::database;
use mairust_actors::storage::{StorageActor, StoreError, StoreMessage};
use mairust_actors::supervisor::{
    ChildExited, ChildId, ChildKind, Exit, Restart, Watch, supervise_actor,
};
use mairust_entities::{mailbox_message, message, queue_entry, unflushed_message};
use sea_orm::ConnectionTrait;

mod common;
use common::lanes::*;

/// Restarts every child at once and forwards how each ended.
struct Restarter(tokio::sync::mpsc::UnboundedSender<Exit>);

impl Actor for Restarter {
    type Context = Context<Self>;
}

impl Handler<ChildExited> for Restarter {
    type Result = Restart;
    fn handle(&mut self, msg: ChildExited, _: &mut Context<Self>) -> Restart {
        let _ = self.0.send(msg.exit);
        Restart::After(Duration::from_millis(1))
    }
}

/// The StorageActor on the setup under a [`Restarter`], and how its runs end.
fn supervised(
    s: &Setup,
) -> (
    Addr<StorageActor>,
    tokio::sync::mpsc::UnboundedReceiver<Exit>,
) {
    let (exits_tx, exits) = tokio::sync::mpsc::unbounded_channel();
    let watch = Watch {
        child: ChildId::new(ChildKind::Storage, "storage"),
        supervisor: Restarter(exits_tx).start().recipient(),
    };
    let (actor, _failures) = storage_actor(s);
    (supervise_actor(watch, Context::new(), actor), exits)
}

async fn assert_panicked(exits: &mut tokio::sync::mpsc::UnboundedReceiver<Exit>) {
    let exit = tokio::time::timeout(Duration::from_secs(10), exits.recv())
        .await
        .expect("the runner reports the panic")
        .unwrap();
    assert!(matches!(exit, Exit::Panicked(_)), "{exit:?}");
}

/// A message stored by the restarted actor, which takes one only after its recovery;
/// then its journal entry is cleared.
async fn store_after_the_restart(actor: &Addr<StorageActor>, s: &Setup) {
    tokio::time::timeout(
        Duration::from_secs(20),
        actor.send(StoreMessage::new(message(s, "after"))),
    )
    .await
    .expect("answered")
    .unwrap()
    .expect("stored after the restart");
    wait_until("the journal is cleared", || async {
        count(&s.db, unflushed_message::Entity).await == 0
    })
    .await;
}

#[actix_rt::test]
async fn a_restart_recovers_only_after_the_row_transaction_in_flight_ended() {
    let scenario = fail::FailScenario::setup();
    let s = setup().await;
    let (actor, mut exits) = supervised(&s);

    // Another connection holds the write lock: the first message's rows stall in
    // flight, and its body fails (the object lane is broken).
    let mut one_connection = s.config.database.clone();
    one_connection.max_connections = 1;
    let blocker = database::connect(&one_connection).await.unwrap();
    blocker.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    break_objects(&s.root);
    // The first object batch runs (and fails); the second one panics the actor.
    fail::cfg("storage_batch", "1*off->1*panic").unwrap();
    let first = actor.send(StoreMessage::new(message(&s, "in flight")));
    let first = tokio::spawn(async move { first.await.expect("actor alive") });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Its handler panicked: its caller hears nothing back (451 for a session).
    let second = actor.send(StoreMessage::new(message(&s, "panics"))).await;
    assert!(second.is_err(), "{second:?}");
    assert_panicked(&mut exits).await;
    let first = first.await.unwrap();
    assert!(
        matches!(first, Err(StoreError::Stopped)),
        "the first is answered by the restart: {first:?}"
    );

    // Now the rows of the first commit (journalled, without a body): the restart's
    // recovery, which waited for them, removes them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.execute_unprepared("COMMIT").await.unwrap();
    mend_objects(&s.root);
    // The restarted actor takes a message only after its recovery: once this is
    // stored, the recovery has run.
    store_after_the_restart(&actor, &s).await;
    assert_eq!(
        count(&s.db, message::Entity).await,
        1,
        "only the last message"
    );
    assert_eq!(count(&s.db, mailbox_message::Entity).await, 1);
    assert_eq!(count(&s.db, queue_entry::Entity).await, 1);
    scenario.teardown();
}

/// SQLite's writer thread panics inside a row transaction (before its COMMIT): the
/// transaction is rolled back, and since a panic's outcome is unknown to the actor, the
/// actor fails with it, as when the transaction ran on its own task. The Supervisor
/// restarts it, and the next message is stored by the same thread, which outlives the
/// panic.
#[actix_rt::test]
async fn a_panic_in_the_sqlite_writer_fails_the_actor_and_mail_flows_after_its_restart() {
    let scenario = fail::FailScenario::setup();
    let s = setup().await;
    let (actor, mut exits) = supervised(&s);
    fail::cfg("sqlite_writer", "1*panic").unwrap();
    let first = actor.send(StoreMessage::new(message(&s, "panics"))).await;
    assert!(
        matches!(first, Ok(Err(StoreError::Stopped)) | Err(_)),
        "never stored: {first:?}"
    );
    assert_panicked(&mut exits).await;
    store_after_the_restart(&actor, &s).await;
    assert_eq!(
        count(&s.db, message::Entity).await,
        1,
        "only the last message"
    );
    assert_eq!(count(&s.db, queue_entry::Entity).await, 1);
    scenario.teardown();
}
