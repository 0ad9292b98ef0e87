//! Retention (SPEC M7): messages deleted through the API are purged once their deletion
//! is older than `retention.deleted_messages_days` (the tests move deletions back in
//! time in the database), with the rows and bodies nothing else refers to; messages
//! still in a mailbox or in the queue stay. Each run is one audit entry with counts. Two
//! purgers on one database (two nodes, or two calls side by side) never delete, count
//! or audit the same thing twice, and leave no message behind.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use common::raw::RawClient;
use common::{Options, TestServer, eventually, message};
use mairust_entities::{mailbox_message, message as message_entity, queue_entry, user};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;

const DAYS: i64 = 7;

/// Purges every 0.2 s, two entries per transaction; nothing is delivered (the queue
/// keeps what it gets).
fn options() -> Options {
    Options {
        extra_yaml: format!(
            "queue:\n  workers: 0\nretention:\n  deleted_messages_days: {DAYS}\n  purge_interval_seconds: 0.2\n  purge_batch_size: 2\n"
        ),
        ..Options::default()
    }
}

/// One message from a@remote.test to `users` over the inbound listener.
async fn deliver(server: &TestServer, users: &[&str], message_id: &str) {
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@remote.test>", 250).await;
    for user in users {
        c.expect(&format!("RCPT TO:<{}>", TestServer::address(user)), 250)
            .await;
    }
    c.expect("DATA", 354).await;
    let to = TestServer::address(users[0]);
    let body = message("a@remote.test", &to, message_id, "hi");
    c.send(format!("{body}.\r\n").as_bytes()).await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    c.expect("QUIT", 221).await;
}

/// The stored message with this Message-ID header.
async fn stored(server: &TestServer, message_id: &str) -> Option<message_entity::Model> {
    server.messages_with_id(message_id).await.into_iter().next()
}

/// The mailbox entry of `user` for the stored message `id`.
async fn entry_of(db: &DatabaseConnection, id: &str, user: &str) -> Option<mailbox_message::Model> {
    let user = user::Entity::find()
        .filter(user::Column::Address.eq(TestServer::address(user)))
        .one(db)
        .await
        .unwrap()
        .expect("user exists");
    mailbox_message::Entity::find()
        .filter(mailbox_message::Column::MessageId.eq(id))
        .filter(mailbox_message::Column::UserId.eq(user.id))
        .one(db)
        .await
        .unwrap()
}

/// DELETE /api/v1/messages/{entry}: the soft delete.
async fn delete_entry(server: &TestServer, key: &str, entry: i64) {
    let resp = reqwest::Client::new()
        .delete(format!("http://{}/api/v1/messages/{entry}", server.http))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "delete entry {entry}");
}

/// Moves the deletion of these entries back past the retention period, in one
/// statement (the clock of the purge, moved for them).
async fn backdate(db: &DatabaseConnection, entries: &[i64]) {
    let long_ago = (Utc::now() - chrono::Duration::days(DAYS + 1)).fixed_offset();
    let moved = mailbox_message::Entity::update_many()
        .col_expr(mailbox_message::Column::DeletedAt, Expr::value(long_ago))
        .filter(mailbox_message::Column::Id.is_in(entries.to_vec()))
        .filter(mailbox_message::Column::DeletedAt.is_not_null())
        .exec(db)
        .await
        .unwrap()
        .rows_affected;
    assert_eq!(
        moved,
        entries.len() as u64,
        "only deleted entries are moved"
    );
}

/// The `retention.purge` audit entries so far (through the API).
async fn purge_audits(server: &TestServer, key: &str) -> Vec<serde_json::Value> {
    let page = server
        .get_json(key, "/api/v1/audit?event=retention.purge&limit=500")
        .await;
    page["data"].as_array().expect("a page").clone()
}

/// A detail summed over audit entries.
fn total(audits: &[serde_json::Value], detail: &str) -> u64 {
    audits
        .iter()
        .map(|a| a["details"][detail].as_u64().expect(detail))
        .sum()
}

/// `mairust_retention_purged_total{kind}` on one node.
async fn purged_metric(server: &TestServer, kind: &str) -> f64 {
    let text = server.metrics_text().await;
    let series = format!("mairust_retention_purged_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn deleted_messages_are_purged_after_the_retention_period() {
    let server = TestServer::start_with(options());
    let key = server.admin_key();
    let db = server.db().await;

    // Five messages to bob alone: deleted and past retention, purged whole.
    let mut gone = Vec::new();
    for i in 0..5 {
        let id = format!("gone-{i}@remote.test");
        deliver(&server, &["bob"], &id).await;
        gone.push(stored(&server, &id).await.unwrap());
    }
    // One message to bob and alice: only bob deletes it.
    deliver(&server, &["bob", "alice"], "shared@remote.test").await;
    let shared = stored(&server, "shared@remote.test").await.unwrap();
    // Bob sends to alice and to a remote address: alice deletes it, the queue keeps it.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/send", server.http))
        .bearer_auth(&key)
        .json(&json!({
            "from": TestServer::address("bob"),
            "to": [TestServer::address("alice"), "far@remote.test"],
            "subject": "queued",
            "text": "still on its way"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let sent: serde_json::Value = resp.json().await.unwrap();
    let queued_id = sent["id"].as_str().unwrap().to_string();
    // Not deleted; and deleted too recently.
    deliver(&server, &["bob"], "kept@remote.test").await;
    let kept = stored(&server, "kept@remote.test").await.unwrap();
    deliver(&server, &["bob"], "recent@remote.test").await;
    let recent = stored(&server, "recent@remote.test").await.unwrap();

    let mut past = Vec::new();
    for m in &gone {
        past.push(entry_of(&db, &m.id, "bob").await.unwrap().id);
    }
    past.push(entry_of(&db, &shared.id, "bob").await.unwrap().id);
    past.push(entry_of(&db, &queued_id, "alice").await.unwrap().id);
    for entry in &past {
        delete_entry(&server, &key, *entry).await;
    }
    let recent_entry = entry_of(&db, &recent.id, "bob").await.unwrap().id;
    delete_entry(&server, &key, recent_entry).await;
    backdate(&db, &past).await;

    // However the runs split the work, the audit entries add up to it.
    let done = eventually(Duration::from_secs(20), || async {
        total(&purge_audits(&server, &key).await, "entries") >= 7
    })
    .await;
    let audits = purge_audits(&server, &key).await;
    assert!(done, "not purged: {audits:?}");
    assert_eq!(total(&audits, "entries"), 7, "{audits:?}");
    assert_eq!(total(&audits, "messages"), 5, "{audits:?}");
    assert_eq!(total(&audits, "unreferenced"), 0, "{audits:?}");
    assert_eq!(total(&audits, "objects_deleted"), 5, "{audits:?}");
    assert_eq!(total(&audits, "objects_failed"), 0, "{audits:?}");
    let sizes: u64 = gone.iter().map(|m| m.size as u64).sum();
    assert_eq!(total(&audits, "bytes"), sizes);
    for a in &audits {
        assert_eq!(a["actor"], "janitor");
        assert_eq!(a["outcome"], "success");
        assert_eq!(a["details"]["retention_days"], DAYS);
    }
    // The backdating is one statement: one run sees all of it, in four batches.
    assert_eq!(
        audits.len(),
        1,
        "one entry per run, not per message: {audits:?}"
    );
    let file = std::fs::read_to_string(server.dir.path().join("audit.log")).unwrap();
    assert_eq!(
        file.lines()
            .filter(|l| l.contains("\"event\":\"retention.purge\""))
            .count(),
        audits.len(),
        "the file has the same entries"
    );
    assert_eq!(purged_metric(&server, "entries").await, 7.0);
    assert_eq!(purged_metric(&server, "messages").await, 5.0);

    // Purged: rows, mailbox entries and bodies.
    for m in &gone {
        assert!(
            stored(&server, m.message_id.as_deref().unwrap())
                .await
                .is_none()
        );
        assert_eq!(server.index_count(&m.id).await, 0);
        assert!(
            server.object(&m.object_key).await.is_none(),
            "body of {}",
            m.id
        );
    }
    // Still referenced: bob's entry went, alice's and the body stay.
    assert!(stored(&server, "shared@remote.test").await.is_some());
    assert!(entry_of(&db, &shared.id, "bob").await.is_none());
    let alices = entry_of(&db, &shared.id, "alice").await.unwrap();
    assert!(alices.deleted_at.is_none());
    assert!(server.object(&shared.object_key).await.is_some());
    // In the queue: the row and body stay for the delivery.
    let queued = message_entity::Entity::find_by_id(&queued_id)
        .one(&db)
        .await
        .unwrap()
        .expect("queued message kept");
    assert!(entry_of(&db, &queued_id, "alice").await.is_none());
    let in_queue = queue_entry::Entity::find()
        .filter(queue_entry::Column::MessageId.eq(&queued_id))
        .count(&db)
        .await
        .unwrap();
    assert_eq!(in_queue, 1);
    assert!(server.object(&queued.object_key).await.is_some());
    // Not deleted, or deleted within the retention period: untouched.
    let entry = entry_of(&db, &kept.id, "bob").await.unwrap();
    assert!(entry.deleted_at.is_none());
    assert!(server.object(&kept.object_key).await.is_some());
    let entry = entry_of(&db, &recent.id, "bob").await.unwrap();
    assert!(entry.deleted_at.is_some(), "still soft-deleted, not purged");
    assert!(server.object(&recent.object_key).await.is_some());

    // Alice deletes the shared one too: its last reference gone, so is the message.
    delete_entry(&server, &key, alices.id).await;
    backdate(&db, &[alices.id]).await;
    let done = eventually(Duration::from_secs(20), || async {
        total(&purge_audits(&server, &key).await, "messages") >= 6
    })
    .await;
    assert!(done, "the shared message was not purged");
    let audits = purge_audits(&server, &key).await;
    assert_eq!(
        (
            audits.len(),
            total(&audits, "entries"),
            total(&audits, "messages")
        ),
        (2, 8, 6)
    );
    assert!(stored(&server, "shared@remote.test").await.is_none());
    assert!(server.object(&shared.object_key).await.is_none());

    // Removing a user takes their entries (by cascade); the purge takes the messages
    // nobody has any more, and leaves those another user still has.
    deliver(&server, &["carol"], "carols@remote.test").await;
    deliver(&server, &["carol", "bob"], "both@remote.test").await;
    let carols = stored(&server, "carols@remote.test").await.unwrap();
    let both = stored(&server, "both@remote.test").await.unwrap();
    let resp = reqwest::Client::new()
        .delete(format!(
            "http://{}/api/v1/users/{}",
            server.http,
            TestServer::address("carol")
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    // Taken away with its user, carol's message keeps the retention grace (counted from
    // its arrival): a purge run that sees it (it purges a deleted entry of bob's) keeps it.
    deliver(&server, &["bob"], "marker@remote.test").await;
    let marker = stored(&server, "marker@remote.test").await.unwrap();
    let marker_entry = entry_of(&db, &marker.id, "bob").await.unwrap();
    let entries_before = total(&purge_audits(&server, &key).await, "entries");
    delete_entry(&server, &key, marker_entry.id).await;
    backdate(&db, &[marker_entry.id]).await;
    let done = eventually(Duration::from_secs(20), || async {
        total(&purge_audits(&server, &key).await, "entries") > entries_before
    })
    .await;
    assert!(done, "the marker entry was not purged");
    assert_eq!(total(&purge_audits(&server, &key).await, "unreferenced"), 0);
    assert!(
        stored(&server, "carols@remote.test").await.is_some(),
        "purged within its grace"
    );
    // Past the grace, it goes.
    let long_ago = (Utc::now() - chrono::Duration::days(DAYS + 1)).fixed_offset();
    message_entity::Entity::update_many()
        .col_expr(message_entity::Column::ReceivedAt, Expr::value(long_ago))
        .filter(message_entity::Column::Id.is_in([carols.id.clone(), both.id.clone()]))
        .exec(&db)
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(20), || async {
        total(&purge_audits(&server, &key).await, "unreferenced") >= 1
    })
    .await;
    assert!(done, "the message of a removed user was not purged");
    let audits = purge_audits(&server, &key).await;
    assert_eq!(total(&audits, "unreferenced"), 1, "{audits:?}");
    assert_eq!(audits.len(), 4);
    assert!(stored(&server, "carols@remote.test").await.is_none());
    assert!(server.object(&carols.object_key).await.is_none());
    assert!(entry_of(&db, &both.id, "bob").await.is_some());
    assert!(server.object(&both.object_key).await.is_some());
    assert_eq!(purged_metric(&server, "messages").await, 8.0);
    db.close().await.ok();
}

/// Two purgers on one database at once, each with its own connections, one entry per
/// transaction: every message goes to bob and alice, so the two entries of a message
/// are next to each other and the purgers keep taking one each. Each entry is counted
/// once, every message is deleted once, and none is left behind with no reference.
#[tokio::test]
async fn two_purgers_at_once_share_the_work_and_lose_nothing() {
    // The server's own purge stays off: the two purgers here are the test's.
    let server = TestServer::start_with(Options {
        extra_yaml: "retention:\n  deleted_messages_days: 0\n".into(),
        ..Options::default()
    });
    const MESSAGES: usize = 24;
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        let id = format!("pair-{i}@remote.test");
        deliver(&server, &["bob", "alice"], &id).await;
        ids.push(stored(&server, &id).await.unwrap());
    }
    let db = server.db().await;
    let long_ago = (Utc::now() - chrono::Duration::days(DAYS + 1)).fixed_offset();
    mailbox_message::Entity::update_many()
        .col_expr(mailbox_message::Column::DeletedAt, Expr::value(long_ago))
        .exec(&db)
        .await
        .unwrap();
    let config = common::mairust_actors_config(&server.config_path);
    let bodies = mairust_actors::storage::BodyStore::open(&config.storage).unwrap();
    let cutoff = mairust_actors::retention::cutoff(Utc::now(), DAYS as u32);
    let (one, two) = (server.db().await, server.db().await);
    let (a, b) = tokio::join!(
        mairust_actors::retention::purge(&one, &bodies, cutoff, 1),
        mairust_actors::retention::purge(&two, &bodies, cutoff, 1),
    );
    assert_eq!((&a.error, &b.error), (&None, &None));
    eprintln!(
        "purger a: {} entries, {} messages; purger b: {} entries, {} messages",
        a.entries, a.messages, b.entries, b.messages
    );
    assert_eq!(a.entries + b.entries, 2 * MESSAGES as u64, "{a:?} {b:?}");
    // Each message goes with its last entry, in that entry's transaction: none is left
    // for the sweep of unreferenced messages to find (that sweep would hide the loss).
    assert_eq!(
        (a.messages + b.messages, a.unreferenced + b.unreferenced),
        (MESSAGES as u64, 0),
        "each message deleted once, with its last entry: {a:?} {b:?}"
    );
    assert_eq!(
        a.objects_deleted + b.objects_deleted,
        MESSAGES as u64,
        "{a:?} {b:?}"
    );
    let left = message_entity::Entity::find().count(&db).await.unwrap();
    assert_eq!(left, 0, "messages left behind with no reference");
    assert_eq!(mailbox_message::Entity::find().count(&db).await.unwrap(), 0);
    for m in &ids {
        assert!(server.object(&m.object_key).await.is_none());
    }
    for conn in [db, one, two] {
        conn.close().await.ok();
    }
}

/// Two nodes on one PostgreSQL and one bucket, both purging every 0.2 s: their audit
/// entries add up to exactly what was deleted.
#[tokio::test]
async fn two_nodes_purge_each_message_once() {
    if !common::backend_available(
        common::postgres_url().is_some() && common::s3_endpoint().is_some(),
        "MAIRUST_TEST_POSTGRES_URL and MAIRUST_TEST_S3_ENDPOINT (.ci/run sets both)",
    ) {
        return;
    }
    let mut a = TestServer::start_with(options());
    let mut b = a.start_node(options());
    let key = a.admin_key();
    let db = a.db().await;
    const ALONE: usize = 20;
    const PAIRS: usize = 10;
    let mut entries = Vec::new();
    let mut keys = Vec::new();
    for i in 0..ALONE + PAIRS {
        let id = format!("node-{i}@remote.test");
        let users: &[&str] = if i < ALONE {
            &["bob"]
        } else {
            &["bob", "alice"]
        };
        // Received by either node.
        deliver(if i % 2 == 0 { &a } else { &b }, users, &id).await;
        let m = stored(&a, &id).await.unwrap();
        for user in users {
            let entry = entry_of(&db, &m.id, user).await.unwrap().id;
            delete_entry(if entry % 2 == 0 { &a } else { &b }, &key, entry).await;
            entries.push(entry);
        }
        keys.push(m.object_key);
    }
    backdate(&db, &entries).await;
    let messages = (ALONE + PAIRS) as u64;
    let done = eventually(Duration::from_secs(30), || async {
        total(&purge_audits(&a, &key).await, "messages") >= messages
    })
    .await;
    assert!(done, "not purged: {:?}", purge_audits(&a, &key).await);
    // No run is left to add anything once both nodes are stopped.
    for node in [&mut a, &mut b] {
        node.signal(libc::SIGTERM);
        assert!(node.wait_exit(Duration::from_secs(30)).success());
    }
    let audits: Vec<serde_json::Value> = {
        use mairust_entities::audit_entry;
        audit_entry::Entity::find()
            .filter(audit_entry::Column::Event.eq("retention.purge"))
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|e| json!({"node": e.node, "details": serde_json::from_str::<serde_json::Value>(&e.details).unwrap()}))
            .collect()
    };
    let mut by_node: HashMap<String, u64> = HashMap::new();
    for e in &audits {
        *by_node.entry(e["node"].to_string()).or_default() +=
            e["details"]["entries"].as_u64().unwrap();
    }
    eprintln!("entries purged by node: {by_node:?}");
    assert_eq!(
        total(&audits, "entries"),
        entries.len() as u64,
        "{audits:?}"
    );
    assert_eq!(total(&audits, "messages"), messages, "{audits:?}");
    assert_eq!(total(&audits, "objects_deleted"), messages, "{audits:?}");
    assert_eq!(message_entity::Entity::find().count(&db).await.unwrap(), 0);
    for key in &keys {
        assert!(a.object(key).await.is_none(), "body {key} left");
    }
    db.close().await.ok();
}
