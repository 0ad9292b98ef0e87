//! The StorageActor's two lanes and the object store's identity, in process on a
//! temporary SQLite database (Parallel mode) and directory. Failures are made on purpose:
//! the object lane fails because its temporary directory is a file, and the row lane is
//! held in flight by a write lock another connection takes.

use std::time::Duration;

use mairust_actors::database;
use mairust_actors::storage::bodies::{MARKER_KEY, SPARE_FILES};
use mairust_actors::storage::identity::{self, IdentityError};
use mairust_actors::storage::{StoreError, StoreMessage, recover_unflushed};
use mairust_entities::{mailbox_message, message, queue_entry, unflushed_message};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait};

mod common;
use common::config;
use common::lanes::*;

/// The disk-full race of issue 13: the object batch fails while the row transaction of
/// the same messages is in flight. The callers must be answered only once their rows
/// are gone, and no row, mailbox entry, queue entry, journal entry or object may remain.
#[actix_rt::test]
async fn a_failed_body_batch_leaves_nothing_even_when_its_rows_commit_after_the_failure() {
    let s = setup().await;
    let (actor, mut failures) = storage(&s);

    // Another connection holds the write lock: the row transaction stalls in flight.
    let mut one_connection = s.config.database.clone();
    one_connection.max_connections = 1;
    let blocker = database::connect(&one_connection).await.unwrap();
    blocker.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    break_objects(&s.root);

    let replies: Vec<_> = (0..5)
        .map(|i| actor.send(StoreMessage::new(message(&s, &format!("doomed {i}")))))
        .collect();
    let mut replies = futures::future::join_all(
        replies
            .into_iter()
            .map(|r| tokio::spawn(async move { r.await.expect("actor alive") })),
    );
    // The object lane reports its failure while the rows cannot commit.
    let failed = tokio::time::timeout(Duration::from_secs(20), failures.recv())
        .await
        .expect("the object lane reports its failure")
        .unwrap();
    assert!(
        format!("{:?}", failed.0).contains("Storage"),
        "{:?}",
        failed.0
    );
    // Nobody is answered while their rows may still commit.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut replies)
            .await
            .is_err(),
        "a caller was answered while its rows were still in flight"
    );
    blocker.execute_unprepared("COMMIT").await.unwrap();
    let results = tokio::time::timeout(Duration::from_secs(20), replies)
        .await
        .expect("callers answered once the rows are gone");
    for result in results {
        assert!(
            matches!(result.unwrap(), Err(StoreError::Storage(_))),
            "a failed body must be answered as a storage failure"
        );
    }
    // Answered: nothing of them is left.
    assert_eq!(count(&s.db, message::Entity).await, 0, "message rows left");
    assert_eq!(count(&s.db, mailbox_message::Entity).await, 0);
    assert_eq!(count(&s.db, queue_entry::Entity).await, 0);
    assert_eq!(count(&s.db, unflushed_message::Entity).await, 0);
    assert!(s.bodies.list("messages/").await.unwrap().is_empty());

    // Mended, the next message is stored whole and its journal entry cleared.
    mend_objects(&s.root);
    let ok = message(&s, "after");
    let id = ok.id.clone();
    actor
        .send(StoreMessage::new(ok))
        .await
        .unwrap()
        .expect("stored once the store works");
    assert!(
        message::Entity::find_by_id(id)
            .one(&s.db)
            .await
            .unwrap()
            .is_some()
    );
    wait_until("the journal is cleared", || async {
        count(&s.db, unflushed_message::Entity).await == 0
    })
    .await;
    // What stays are the empty spares made for the next bodies, at most SPARE_FILES
    // (the list of their directories aside).
    let temporaries: Vec<u64> = std::fs::read_dir(s.root.join(".tmp"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "placed-dirs")
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert!(
        temporaries.len() <= SPARE_FILES && temporaries.iter().all(|len| *len == 0),
        "temporary files left beyond the spares: {temporaries:?}"
    );
}

/// Whichever lane finishes first (rows committed before the object failed, or still
/// queued), a failed body leaves nothing once answered.
#[actix_rt::test]
async fn a_failed_body_leaves_nothing_whichever_lane_finishes_first() {
    let s = setup().await;
    let (actor, _failures) = storage(&s);
    break_objects(&s.root);
    let results = futures::future::join_all(
        (0..20).map(|i| actor.send(StoreMessage::new(message(&s, &format!("m{i}"))))),
    )
    .await;
    for result in results {
        assert!(result.unwrap().is_err());
    }
    assert_eq!(count(&s.db, message::Entity).await, 0, "message rows left");
    assert_eq!(count(&s.db, queue_entry::Entity).await, 0);
    assert_eq!(count(&s.db, unflushed_message::Entity).await, 0);
}

/// SQLite: bodies go into files made ahead at their place, whose names become the
/// object keys. A message that failed leaves neither its file nor its rows; one stored
/// is in its file, at the key its row records.
#[actix_rt::test]
async fn a_failed_message_leaves_nothing_of_the_file_made_for_it() {
    let s = setup().await;
    let (actor, _failures) = storage(&s);
    let stored = |id: &str| {
        let db = s.db.clone();
        let id = id.to_string();
        async move { message::Entity::find_by_id(id).one(&db).await.unwrap() }
    };
    let first_id = store_ok(&actor, &s, "first").await;
    let messages = s.root.join("messages");
    wait_until("the files for the next bodies are made", || async {
        files_under(&messages).0 == SPARE_FILES
    })
    .await;
    assert_eq!(files_under(&messages), (SPARE_FILES, 1));

    let placed_id = store_ok(&actor, &s, "in its place").await;
    let row = stored(&placed_id).await.expect("stored");
    assert!(
        !row.object_key.contains(&placed_id),
        "not in a file made ahead: {}",
        row.object_key
    );
    assert_eq!(
        s.bodies.get(&row.object_key).await.unwrap().len() as i64,
        row.size
    );
    assert_eq!(files_under(&messages), (SPARE_FILES - 1, 2));

    break_objects(&s.root);
    let doomed = message(&s, "doomed");
    let doomed_id = doomed.id.clone();
    let result = actor.send(StoreMessage::new(doomed)).await.unwrap();
    assert!(matches!(result, Err(StoreError::Storage(_))), "{result:?}");
    assert!(stored(&doomed_id).await.is_none());
    wait_until("the journal is cleared", || async {
        count(&s.db, unflushed_message::Entity).await == 0
    })
    .await;
    assert_eq!(
        files_under(&messages),
        (SPARE_FILES - 2, 2),
        "the file made for the failed message was left"
    );
    mend_objects(&s.root);
    assert!(stored(&first_id).await.is_some());
}

/// Regular files under `dir`, by size: (empty, not empty).
fn files_under(dir: &std::path::Path) -> (usize, usize) {
    let mut counts = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (empty, full) = files_under(&entry.path());
            counts = (counts.0 + empty, counts.1 + full);
        } else if meta.len() == 0 {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    counts
}

/// Startup recovery looks at the journal only: an acknowledged row whose body is gone
/// (an operator moved it) is never deleted; a journalled row without body is.
#[actix_rt::test]
async fn recovery_removes_only_journalled_rows_without_body() {
    let s = setup().await;
    let (actor, _failures) = storage(&s);
    let acknowledged = message(&s, "acknowledged");
    let (ack_id, ack_key) = (acknowledged.id.clone(), acknowledged.object_key.clone());
    actor
        .send(StoreMessage::new(acknowledged))
        .await
        .unwrap()
        .unwrap();
    let complete_id = store_ok(&actor, &s, "complete, journal not yet cleared").await;
    wait_until("journal cleared", || async {
        count(&s.db, unflushed_message::Entity).await == 0
    })
    .await;
    // The acknowledged message's body disappears; the complete one is journalled again
    // as if the process died before clearing it; a third row is journalled without body
    // (the process died before its body was flushed).
    s.bodies.delete(&ack_key).await.unwrap();
    let complete_key = message::Entity::find_by_id(complete_id.clone())
        .one(&s.db)
        .await
        .unwrap()
        .unwrap()
        .object_key;
    journal(&s.db, &complete_id, &complete_key).await;
    let unflushed = message(&s, "never flushed");
    let unflushed_id = unflushed.id.clone();
    actor
        .send(StoreMessage::new(unflushed))
        .await
        .unwrap()
        .unwrap();
    let unflushed_key = message::Entity::find_by_id(unflushed_id.clone())
        .one(&s.db)
        .await
        .unwrap()
        .unwrap()
        .object_key;
    s.bodies.delete(&unflushed_key).await.unwrap();
    journal(&s.db, &unflushed_id, &unflushed_key).await;

    let removed = recover_unflushed(&s.db, &s.bodies).await.unwrap();
    assert_eq!(removed, 1);
    assert!(
        message::Entity::find_by_id(ack_id)
            .one(&s.db)
            .await
            .unwrap()
            .is_some(),
        "an acknowledged message was deleted"
    );
    assert!(
        message::Entity::find_by_id(complete_id)
            .one(&s.db)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        message::Entity::find_by_id(unflushed_id)
            .one(&s.db)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(count(&s.db, unflushed_message::Entity).await, 0);
}

async fn journal(db: &DatabaseConnection, id: &str, key: &str) {
    use sea_orm::ActiveValue::Set;
    unflushed_message::Entity::insert(unflushed_message::ActiveModel {
        message_id: Set(id.into()),
        object_key: Set(key.into()),
        created_at: Set(chrono::Utc::now().into()),
    })
    .exec(db)
    .await
    .unwrap();
}

/// The identity marker: each way a store can be the wrong one is refused, naming the
/// store, and nothing is created or deleted.
#[actix_rt::test]
async fn a_store_that_is_not_this_databases_is_refused() {
    let s = setup().await;
    let (actor, _failures) = storage(&s);
    for i in 0..8 {
        actor
            .send(StoreMessage::new(message(&s, &format!("m{i}"))))
            .await
            .unwrap()
            .unwrap();
    }
    let storage = &s.config.storage;
    assert!(identity::open_verified(storage, &s.db).await.is_ok());

    // Moved away (an unmounted volume): refused, naming the path, not created.
    let moved = s.root.with_file_name("objects-elsewhere");
    std::fs::rename(&s.root, &moved).unwrap();
    let err = identity::open_verified(storage, &s.db).await.unwrap_err();
    assert!(matches!(err, IdentityError::Missing(_)), "{err}");
    assert!(
        err.to_string().contains(&s.root.display().to_string()),
        "{err}"
    );
    assert!(!s.root.exists(), "the store root was created");

    // An empty directory in its place (the bare mount point): no marker.
    std::fs::create_dir(&s.root).unwrap();
    let err = identity::open_verified(storage, &s.db).await.unwrap_err();
    assert!(matches!(err, IdentityError::MarkerMissing { .. }), "{err}");
    assert!(
        err.to_string().contains(&s.root.display().to_string()),
        "{err}"
    );
    std::fs::remove_dir(&s.root).unwrap();

    // Back in place: accepted, every row still there.
    std::fs::rename(&moved, &s.root).unwrap();
    assert!(identity::open_verified(storage, &s.db).await.is_ok());
    assert_eq!(count(&s.db, message::Entity).await, 8);

    // Another database's store.
    let other = setup().await;
    let err = identity::open_verified(&other.config.storage, &s.db)
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Foreign { .. }), "{err}");

    // The marker is right but most bodies are gone (a partial restore). (The empty
    // files beside them are the spares made for the next bodies.)
    let listed = s.bodies.list("messages/").await.unwrap();
    for object in listed.iter().filter(|o| o.size > 0).take(4) {
        s.bodies.delete(&object.key).await.unwrap();
    }
    let err = identity::open_verified(storage, &s.db).await.unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::BodiesMissing {
                missing: 4,
                sampled: 8,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(count(&s.db, message::Entity).await, 8, "rows were deleted");
}

/// A new database beside a store that has a marker and bodies is not tied to it
/// silently.
#[actix_rt::test]
async fn a_new_database_does_not_claim_an_existing_store() {
    let s = setup().await;
    let (actor, _failures) = storage(&s);
    actor
        .send(StoreMessage::new(message(&s, "theirs")))
        .await
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.storage = s.config.storage.clone();
    let db = common::database(&config, false).await;
    let err = identity::open_verified(&config.storage, &db)
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Unclaimed { .. }), "{err}");
}

/// Temporary files: what a failed write leaves is removed at once, what a kill leaves
/// is swept once old, and an older version's (beside the bodies) once too.
#[test]
fn stale_temporary_files_are_swept() {
    use mairust_actors::storage::bodies::{TMP_DIR, remove_stale_temporaries};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let legacy_dir = root.join("messages/2026-12-01/10");
    std::fs::create_dir_all(&legacy_dir).unwrap();
    let legacy = legacy_dir.join("0193.eml.tmp");
    let body = legacy_dir.join("0194.eml");
    std::fs::write(&legacy, b"half").unwrap();
    std::fs::write(&body, b"whole").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&legacy)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        remove_stale_temporaries(root, Duration::from_secs(600)).unwrap(),
        1
    );
    assert!(!legacy.exists() && body.exists());

    let fresh = root.join(TMP_DIR).join("fresh.eml.tmp");
    let stale = root.join(TMP_DIR).join("stale.eml.tmp");
    std::fs::write(&fresh, b"being written").unwrap();
    std::fs::write(&stale, b"left by a kill").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        remove_stale_temporaries(root, Duration::from_secs(600)).unwrap(),
        1
    );
    assert!(fresh.exists() && !stale.exists());
}

/// A database that lost its identity (a migration rolled back past it and applied
/// again) takes the store's back when its newest bodies are there.
#[actix_rt::test]
async fn a_database_that_lost_its_identity_takes_its_stores_back() {
    let s = setup().await;
    let (actor, _failures) = storage(&s);
    actor
        .send(StoreMessage::new(message(&s, "kept")))
        .await
        .unwrap()
        .unwrap();
    let before = identity::database_identity(&s.db).await.unwrap().unwrap();
    mairust_entities::store_identity::Entity::delete_by_id(1)
        .exec(&s.db)
        .await
        .unwrap();
    identity::open_verified(&s.config.storage, &s.db)
        .await
        .unwrap();
    assert_eq!(
        identity::database_identity(&s.db).await.unwrap(),
        Some(before)
    );
}

/// The volume unmounted under a running node: the bare mount point has no marker, so
/// nothing is written into it and the message is refused (before the health probe
/// notices).
#[actix_rt::test]
async fn nothing_is_written_into_a_bare_mount_point() {
    let s = setup().await;
    let (actor, _failures) = storage(&s);
    actor
        .send(StoreMessage::new(message(&s, "before")))
        .await
        .unwrap()
        .unwrap();
    let away = s.root.with_file_name("objects-unmounted");
    std::fs::rename(&s.root, &away).unwrap();
    std::fs::create_dir(&s.root).unwrap();
    let result = actor
        .send(StoreMessage::new(message(&s, "during")))
        .await
        .unwrap();
    assert!(matches!(result, Err(StoreError::Storage(_))), "{result:?}");
    let written: Vec<_> = std::fs::read_dir(&s.root).unwrap().collect();
    assert!(
        written.is_empty(),
        "written into the mount point: {written:?}"
    );
    assert_eq!(count(&s.db, message::Entity).await, 1);
}

/// A missing marker is written again only just after the database took its identity
/// (a start that died in between); later, even without messages, it is a store that is
/// not mounted.
#[actix_rt::test]
async fn a_missing_marker_is_rewritten_only_for_a_fresh_identity() {
    let s = setup().await;
    let storage = &s.config.storage;
    std::fs::remove_file(s.root.join(MARKER_KEY)).unwrap();
    identity::open_verified(storage, &s.db).await.unwrap();
    assert!(s.root.join(MARKER_KEY).is_file(), "marker not rewritten");

    std::fs::remove_file(s.root.join(MARKER_KEY)).unwrap();
    let long_ago = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).fixed_offset();
    mairust_entities::store_identity::Entity::update_many()
        .col_expr(
            mairust_entities::store_identity::Column::CreatedAt,
            sea_orm::sea_query::Expr::value(long_ago),
        )
        .exec(&s.db)
        .await
        .unwrap();
    let err = identity::open_verified(storage, &s.db).await.unwrap_err();
    assert!(matches!(err, IdentityError::MarkerMissing { .. }), "{err}");
    assert!(
        !s.root.join(MARKER_KEY).exists(),
        "written into the mount point"
    );
}
