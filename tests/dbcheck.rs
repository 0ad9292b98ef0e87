//! `mairust db check [--fix]` (SPEC O7) against planted faults: a deleted body, an
//! orphan body, an altered size, a stale queue lease; then a damaged body, which only a
//! backup can repair. Also `mairust migrate rollback --to`.

mod common;

use common::{Options, TestServer, deliver_to_bob};
use mairust_entities::{message, queue_entry};
use mairust_migration::{Migrator, MigratorTrait};
use sea_orm::{ActiveValue::Set, EntityTrait};

fn output(out: &std::process::Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn kinds(json: &str) -> Vec<(String, bool)> {
    let report: serde_json::Value = serde_json::from_str(json).expect("JSON report");
    let mut kinds: Vec<(String, bool)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["fixed"].as_bool().unwrap(),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

#[tokio::test]
async fn db_check_finds_planted_faults_and_fix_repairs_them() {
    let dead = common::free_port();
    let server = TestServer::start_with(Options {
        extra_yaml: format!(
            "queue:\n  retry:\n    initial_seconds: 3600\ndelivery:\n  connect_timeout_seconds: 1\n  routes:\n    remote.test: 127.0.0.1:{dead}\n"
        ),
        ..Options::default()
    });
    for i in 0..4 {
        let id = format!("check-{i}@remote.test");
        assert_eq!(deliver_to_bob(&server, &id).await.code, 250);
    }
    // A queued message (its next hop refuses, next try in an hour).
    let key = server.admin_key();
    let sent = reqwest::Client::new()
        .post(format!("http://{}/api/v1/send", server.http))
        .bearer_auth(&key)
        .json(&serde_json::json!({"from": TestServer::address("bob"), "to": ["x@remote.test"], "subject": "queued", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || async {
            let db = server.db().await;
            queue_entry::Entity::find()
                .all(&db)
                .await
                .unwrap()
                .iter()
                .any(|e| e.attempts > 0 && e.lease_owner.is_none())
        })
        .await,
        "the queued message was not tried"
    );
    let out = server.cli(&["db", "check"], None);
    assert_eq!(output(&out).0, Some(0), "{}", output(&out).1);
    assert!(output(&out).1.contains("no problems found"));

    // Plant the faults.
    let db = server.db().await;
    let row = |id: &'static str| {
        let server = &server;
        async move { server.messages_with_id(id).await.remove(0) }
    };
    let lost = row("check-0@remote.test").await;
    let config = common::mairust_actors_config(&server.config_path);
    let store = mairust_actors::storage::BodyStore::open(&config.storage).unwrap();
    store.delete(&lost.object_key).await.unwrap();
    let orphan = "messages/2026-01-01/00/orphan.eml";
    store
        .put(
            orphan,
            bytes::Bytes::from_static(b"Subject: nobody's\r\n\r\nx\r\n"),
        )
        .await
        .unwrap();
    // A file made ahead for a body and left by a kill (empty, 20 minutes old); the
    // running server's own spares (SQLite + fs) are younger and never reported.
    let spare = "messages/2026-01-01/00/left-by-a-kill.eml";
    store.put(spare, bytes::Bytes::new()).await.unwrap();
    if server.backend.s3.is_none() {
        std::fs::File::options()
            .write(true)
            .open(server.dir.path().join("objects").join(spare))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(1200))
            .unwrap();
    }
    let resized = row("check-1@remote.test").await;
    message::Entity::update(message::ActiveModel {
        id: Set(resized.id.clone()),
        size: Set(resized.size + 10),
        ..Default::default()
    })
    .exec(&db)
    .await
    .unwrap();
    let entry = queue_entry::Entity::find().one(&db).await.unwrap().unwrap();
    queue_entry::Entity::update(queue_entry::ActiveModel {
        id: Set(entry.id.clone()),
        lease_owner: Set(Some("mx9-deadbeef".into())),
        lease_until: Set(Some(
            (chrono::Utc::now() - chrono::Duration::hours(2)).into(),
        )),
        ..Default::default()
    })
    .exec(&db)
    .await
    .unwrap();

    let out = server.cli(&["db", "check"], None);
    let (code, text) = output(&out);
    assert_eq!(code, Some(1), "{text}");
    for needle in [
        "missing_object",
        "orphan_object",
        "size_mismatch",
        "stale_lease",
        "`--fix` repairs",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert!(text.contains("check-0@remote.test"), "{text}");
    // (S3 dates an object by its upload: the planted spare is young there.)
    let stale_spare = server.backend.s3.is_none();
    let expect = |fixed: bool| {
        let mut kinds = vec![
            ("missing_object".to_string(), fixed),
            ("orphan_object".to_string(), false),
            ("size_mismatch".to_string(), fixed),
            ("stale_lease".to_string(), fixed),
        ];
        if stale_spare {
            kinds.insert(3, ("spare_file".to_string(), fixed));
        }
        kinds
    };
    let out = server.cli(&["db", "check", "--json"], None);
    assert_eq!(kinds(&output(&out).1), expect(false));
    // A young orphan is left alone by default (its row may be on its way).
    let out = server.cli(&["db", "check", "--fix", "--json"], None);
    assert_eq!(output(&out).0, Some(1));
    assert_eq!(kinds(&output(&out).1), expect(true));
    if stale_spare {
        assert!(store.get(spare).await.is_err(), "the stale spare was kept");
    }
    let out = server.cli(&["db", "check", "--fix", "--orphan-grace", "0"], None);
    let (code, text) = output(&out);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("fixed  orphan_object"), "{text}");
    let out = server.cli(&["db", "check"], None);
    let (code, text) = output(&out);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no problems found"), "{text}");

    // What was repaired: the size, the lease, the orphan gone, the lost message
    // recorded in the audit log.
    let fixed = message::Entity::find_by_id(resized.id.clone())
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fixed.size, resized.size);
    let entry = queue_entry::Entity::find_by_id(entry.id)
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert!(entry.lease_owner.is_none() && entry.lease_until.is_none());
    assert!(!store.exists(orphan).await.unwrap());
    assert!(
        store.exists(&format!("lost+found/{orphan}")).await.unwrap(),
        "orphans are kept aside, not deleted"
    );
    assert!(
        server
            .messages_with_id("check-0@remote.test")
            .await
            .is_empty()
    );
    let audit = server
        .get_json(&key, "/api/v1/audit?event=db_check.lost_message")
        .await;
    assert_eq!(audit["data"][0]["target"], lost.id.as_str(), "{audit}");
    assert_eq!(
        audit["data"][0]["details"]["message_id"],
        "check-0@remote.test"
    );

    // A damaged body (same size, other bytes) cannot be repaired: it stays reported.
    let damaged = row("check-2@remote.test").await;
    let mut bytes = store.get(&damaged.object_key).await.unwrap().to_vec();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    store
        .put(&damaged.object_key, bytes::Bytes::from(bytes))
        .await
        .unwrap();
    let out = server.cli(&["db", "check", "--fix"], None);
    let (code, text) = output(&out);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("checksum_mismatch"), "{text}");
    assert!(text.contains("need attention by hand"), "{text}");
    // --no-checksums compares sizes only, which agree.
    let out = server.cli(&["db", "check", "--no-checksums"], None);
    assert_eq!(output(&out).0, Some(0), "{}", output(&out).1);
}

#[tokio::test]
async fn migrate_rollback_to_a_middle_version_and_back() {
    let mut server = TestServer::start();
    server.kill();
    // Every migration after the third, however many later versions add.
    let after_third = Migrator::migrations().len() - 3;
    let out = server.cli(&["migrate", "rollback", "--to", "3"], None);
    let (code, text) = output(&out);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("rolling back m20261130_000005_audit_log"),
        "{text}"
    );
    assert!(
        text.contains("rolling back m20261129_000004_hooks"),
        "{text}"
    );
    assert!(
        text.contains(&format!("rolled back {after_third} migration(s)")),
        "{text}"
    );
    let out = server.cli(&["migrate", "status"], None);
    let (_, text) = output(&out);
    assert!(
        text.contains("applied  m20261129_000003_api_keys"),
        "{text}"
    );
    assert!(text.contains("pending  m20261129_000004_hooks"), "{text}");
    // The server refuses the older schema and names the command.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mairust"))
        .args(["--config", server.config_path.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    let (code, text) = output(&out);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("mairust migrate"), "{text}");
    // Unknown and not-applied versions are refused.
    let (code, text) = output(&server.cli(&["migrate", "rollback", "--to", "42"], None));
    assert_eq!(code, Some(1));
    assert!(text.contains("no migration `42`"), "{text}");
    let (code, text) = output(&server.cli(
        &["migrate", "rollback", "--to", "m20261129_000004_hooks"],
        None,
    ));
    assert_eq!(code, Some(1));
    assert!(text.contains("is not applied"), "{text}");
    // Up again; the data of the kept tables survived.
    let (code, text) = output(&server.cli(&["migrate"], None));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("applied {after_third} migration(s)")),
        "{text}"
    );
    server.spawn();
    assert_eq!(deliver_to_bob(&server, "after@remote.test").await.code, 250);
}

#[tokio::test]
async fn nothing_is_created_on_a_wrong_or_empty_database() {
    // A configuration whose database was never initialised (a wrong database.url).
    let target = TestServer::prepare(Options::default());
    let (code, text) = output(&target.cli(&["db", "check", "--fix"], None));
    assert_eq!(code, Some(1), "{text}");
    let expected = if target.backend.is_postgres() {
        "is empty: no MaiRust schema"
    } else {
        "no database at"
    };
    assert!(text.contains(expected), "{text}");
    let (code, text) = output(&target.cli(&["check", "db"], None));
    if target.backend.is_postgres() {
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains("empty: no schema yet"), "{text}");
    } else {
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("no database at"), "{text}");
    }
    let (code, text) = output(&target.cli(
        &[
            "backup",
            "--output",
            target.dir.path().join("b.tar").to_str().unwrap(),
        ],
        None,
    ));
    assert_eq!(code, Some(1), "{text}");
    assert!(!target.dir.path().join("b.tar.partial").exists());
    // Still untouched: a restore into it needs no --force.
    assert!(!target.dir.path().join("mairust.db").exists());
    if target.backend.is_postgres() {
        use sea_orm::ConnectionTrait;
        let db = target.db().await;
        let n: i64 = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public'",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "n")
            .unwrap();
        assert_eq!(n, 0);
    }
}
