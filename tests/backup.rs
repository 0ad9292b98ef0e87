//! Backup and restore (SPEC O6) on whichever backend the suite runs on (SQLite + fs, or
//! PostgreSQL + S3): a backup taken while mail keeps arriving restores into a fresh
//! place where a server serves every message acknowledged before the backup, byte for
//! byte; damaged archives and non-empty targets are refused and nothing is written.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Options, TestServer, deliver_to_bob};
use reqwest::StatusCode;

/// Message-ID → stored bytes, as the source server holds them.
async fn bodies(server: &TestServer, ids: &[String]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for id in ids {
        let rows = server.messages_with_id(id).await;
        assert_eq!(rows.len(), 1, "{id}");
        let bytes = server.object(&rows[0].object_key).await.expect("body");
        out.insert(id.clone(), bytes);
    }
    out
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The target holds nothing: no database rows or file, no bodies.
async fn assert_untouched(target: &TestServer) {
    if target.backend.is_postgres() {
        let db = target.db().await;
        use sea_orm::ConnectionTrait;
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public'",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<i64>("", "n").unwrap(), 0, "tables written");
    } else {
        assert!(
            !target.dir.path().join("mairust.db").exists(),
            "database written"
        );
    }
    assert!(
        target.object_keys("messages/").await.is_empty(),
        "bodies written"
    );
}

#[tokio::test]
async fn backup_during_traffic_restores_every_acknowledged_message() {
    let server = TestServer::start();
    let key = server.admin_key();
    let mut before = Vec::new();
    for i in 0..15 {
        let id = format!("before-{i}@remote.test");
        assert_eq!(deliver_to_bob(&server, &id).await.code, 250);
        before.push(id);
    }
    let expected = bodies(&server, &before).await;

    // Keep mail coming while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (stop, during, inbound) = (stop.clone(), during.clone(), server.inbound);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (mut c, _) = common::raw::RawClient::connect(inbound).await;
                c.expect("EHLO client.test", 250).await;
                c.expect("MAIL FROM:<a@remote.test>", 250).await;
                c.expect(&format!("RCPT TO:<{}>", TestServer::address("bob")), 250)
                    .await;
                c.expect("DATA", 354).await;
                let body = common::message(
                    "a@remote.test",
                    &TestServer::address("bob"),
                    &format!("during-{n}@remote.test"),
                    "while the backup runs",
                );
                c.send(format!("{body}.\r\n").as_bytes()).await;
                assert_eq!(c.reply().await.unwrap().code, 250);
                n += 1;
                during.store(n, Ordering::Relaxed);
            }
        })
    };
    while during.load(Ordering::Relaxed) < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let archive = server.dir.path().join("backup.tar");
    let out = {
        let config = server.config_path.clone();
        let archive = archive.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_mairust"))
                .args(["--config", config.to_str().unwrap(), "backup", "--output"])
                .arg(&archive)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let sent_before_stop = during.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();
    assert!(out.status.success(), "{}", output(&out));
    assert!(
        output(&out).contains("backup written to"),
        "{}",
        output(&out)
    );
    assert!(sent_before_stop >= 3);

    // Restore into a fresh database and object store.
    let mut target = TestServer::prepare(Options::default());
    let out = target.cli(&["restore", "--input", archive.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", output(&out));
    assert!(output(&out).contains("restored"), "{}", output(&out));
    target.spawn();
    for (id, bytes) in &expected {
        let rows = target.messages_with_id(id).await;
        assert_eq!(rows.len(), 1, "{id} not restored");
        assert_eq!(
            &target.object(&rows[0].object_key).await.expect("body"),
            bytes,
            "{id} differs"
        );
        assert_eq!(
            target.index_count(&rows[0].id).await,
            1,
            "{id} not in bob's INBOX"
        );
    }
    // The restored server serves them, to the restored API key.
    let client = reqwest::Client::new();
    let path = format!(
        "/api/v1/messages?limit=500&user={}",
        TestServer::address("bob")
    );
    let list = target.get_json(&key, &path).await;
    let data = list["data"].as_array().expect("a list");
    assert!(data.len() >= expected.len(), "{list}");
    let first = data
        .iter()
        .find(|m| m["header_message_id"] == "before-0@remote.test")
        .expect("listed");
    let raw = client
        .get(format!(
            "http://{}/api/v1/messages/{}/raw",
            target.http, first["id"]
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(
        raw.bytes().await.unwrap().as_ref(),
        expected["before-0@remote.test"].as_slice()
    );
    // The restore is audited in the restored database, the backup in the source.
    let audit = target
        .get_json(&key, "/api/v1/audit?event=backup.restore")
        .await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1, "{audit}");

    // A second restore over it needs --force.
    target.kill();
    let out = target.cli(&["restore", "--input", archive.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(output(&out).contains("--force"), "{}", output(&out));
    let out = target.cli(
        &["restore", "--input", archive.to_str().unwrap(), "--force"],
        None,
    );
    assert!(out.status.success(), "{}", output(&out));
}

#[tokio::test]
async fn damaged_or_truncated_archives_are_refused_before_anything_is_written() {
    let server = TestServer::start();
    for i in 0..3 {
        let id = format!("damage-{i}@remote.test");
        assert_eq!(deliver_to_bob(&server, &id).await.code, 250);
    }
    let archive = server.dir.path().join("backup.tar");
    server.cli_ok(&["backup", "--output", archive.to_str().unwrap()], None);
    let bytes = std::fs::read(&archive).unwrap();

    // One byte of a message body changed.
    let at = bytes
        .windows(b"damage-1@remote.test".len())
        .position(|w| w == b"damage-1@remote.test")
        .expect("a body in the archive");
    let mut corrupted = bytes.clone();
    corrupted[at] ^= 0x20;
    let corrupted_path = server.dir.path().join("corrupted.tar");
    std::fs::write(&corrupted_path, &corrupted).unwrap();
    // Cut in the middle.
    let truncated_path = server.dir.path().join("truncated.tar");
    std::fs::write(&truncated_path, &bytes[..bytes.len() / 2]).unwrap();
    // Not an archive at all.
    let garbage_path = server.dir.path().join("garbage.tar");
    std::fs::write(&garbage_path, b"this is not a tar file").unwrap();

    let target = TestServer::prepare(Options::default());
    for (path, needle) in [
        (&corrupted_path, "is damaged"),
        (&truncated_path, "truncated"),
        (&garbage_path, "not a readable backup archive"),
    ] {
        let out = target.cli(&["restore", "--input", path.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(1), "{}", output(&out));
        assert!(output(&out).contains(needle), "{needle}: {}", output(&out));
        assert_untouched(&target).await;
    }
    let out = target.cli(&["restore", "--input", "/nonexistent/backup.tar"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(output(&out).contains("cannot open"), "{}", output(&out));
}

#[tokio::test]
async fn db_only_backup_and_restore_refusals() {
    let server = TestServer::start();
    assert_eq!(
        deliver_to_bob(&server, "dbonly@remote.test").await.code,
        250
    );
    let archive = server.dir.path().join("db.tar");
    let out = server.cli_ok(
        &[
            "backup",
            "--db-only",
            "--json",
            "--output",
            archive.to_str().unwrap(),
        ],
        None,
    );
    let manifest: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(manifest["includes_objects"], false);
    assert_eq!(manifest["includes_config"], false);
    assert_eq!(manifest["counts"]["messages"], 1);
    assert_eq!(manifest["files"].as_array().unwrap().len(), 1);
    // A running server on the target is refused.
    let out = server.cli(
        &["restore", "--input", archive.to_str().unwrap(), "--force"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output(&out).contains("stop it before restoring"),
        "{}",
        output(&out)
    );
    // --config-to needs a configuration in the archive.
    let target = TestServer::prepare(Options::default());
    let to = target.dir.path().join("restored.yaml");
    let out = target.cli(
        &[
            "restore",
            "--input",
            archive.to_str().unwrap(),
            "--config-to",
            to.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(output(&out).contains("--db-only"), "{}", output(&out));
    assert_untouched(&target).await;
    // The database alone restores; `db check` then names the missing body.
    let out = target.cli(&["restore", "--input", archive.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", output(&out));
    let out = target.cli(&["db", "check"], None);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(output(&out).contains("missing_object"), "{}", output(&out));
}
