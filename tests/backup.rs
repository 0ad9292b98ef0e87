//! Backup and restore (SPEC O6) on whichever backend the suite runs on (SQLite + fs, or
//! PostgreSQL + S3): a backup taken while mail keeps arriving restores into a fresh
//! place where a server serves every message acknowledged before the backup, byte for
//! byte; damaged archives and non-empty targets are refused and nothing is written.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Options, TestServer, assert_refused, deliver_to_bob, output};
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

/// A server holding `n` messages to bob (`PREFIX-i@remote.test`) and a full backup of
/// it.
async fn backed_up(prefix: &str, n: usize) -> (TestServer, std::path::PathBuf) {
    let server = TestServer::start();
    for i in 0..n {
        let id = format!("{prefix}-{i}@remote.test");
        assert_eq!(deliver_to_bob(&server, &id).await.code, 250);
    }
    let archive = server.dir.path().join("backup.tar");
    server.cli_ok(&["backup", "--output", archive.to_str().unwrap()], None);
    (server, archive)
}

/// The number an SQL `COUNT(*) AS n` query answers.
async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    db.query_one_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        sql,
    ))
    .await
    .unwrap()
    .expect("a row")
    .try_get::<i64>("", "n")
    .unwrap()
}

/// The target holds nothing: no database rows or file, no bodies.
async fn assert_untouched(target: &TestServer) {
    if target.backend.is_postgres() {
        let db = target.db().await;
        let tables = count(
            &db,
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .await;
        assert_eq!(tables, 0, "tables written");
    } else {
        assert!(
            !target.dir.path().join("mairust.db").exists(),
            "database written"
        );
    }
    // An `fs` root is made only when a restore writes bodies.
    if target.backend.s3.is_some() || target.dir.path().join("objects").exists() {
        assert!(
            target.object_keys("messages/").await.is_empty(),
            "bodies written"
        );
    }
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
    let (server, archive) = backed_up("damage", 3).await;
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
    assert_refused(&out, "missing_object");
}

/// An archive's entries: name and contents, in order.
type Entries = Vec<(String, Vec<u8>)>;

/// The entries of an archive, in order.
fn read_entries(path: &std::path::Path) -> Entries {
    use std::io::Read;
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Writes plain-file entries as a tar archive; names are written as given, even the
/// ones `tar::Builder` would refuse.
fn write_entries(path: &std::path::Path, entries: &[(String, Vec<u8>)]) {
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        let raw = &mut header.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        tar.append(&header, bytes.as_slice()).unwrap();
    }
    tar.finish().unwrap();
}

/// Makes the manifest agree with the entries again (size and SHA-256 of each file it
/// lists), as a forger would.
fn reseal(entries: &mut [(String, Vec<u8>)]) {
    use sha2::Digest;
    let sums: BTreeMap<String, (u64, String)> = entries
        .iter()
        .filter(|(n, _)| n != "manifest.json")
        .map(|(n, b)| {
            let sha: String = sha2::Sha256::digest(b)
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect();
            (n.clone(), (b.len() as u64, sha))
        })
        .collect();
    let manifest = entries
        .iter_mut()
        .find(|(n, _)| n == "manifest.json")
        .expect("a manifest");
    let mut json: serde_json::Value = serde_json::from_slice(&manifest.1).unwrap();
    for file in json["files"].as_array_mut().unwrap() {
        let (size, sha) = &sums[file["path"].as_str().unwrap()];
        file["size"] = (*size).into();
        file["sha256"] = sha.clone().into();
    }
    manifest.1 = serde_json::to_vec_pretty(&json).unwrap();
}

#[tokio::test]
async fn archives_with_duplicate_or_foreign_entries_are_refused() {
    let (_server, archive) = backed_up("entries", 2).await;
    let entries = read_entries(&archive);
    let object = entries
        .iter()
        .position(|(n, _)| n.starts_with("objects/messages/"))
        .expect("a body in the archive");
    let manifest = entries
        .iter()
        .position(|(n, _)| n == "manifest.json")
        .unwrap();
    let (object_name, object_bytes) = entries[object].clone();
    let forged_body = object_bytes
        .iter()
        .map(|b| if *b == b'h' { b'H' } else { *b })
        .collect::<Vec<u8>>();
    assert_ne!(forged_body, object_bytes);

    let mut cases: Vec<(&str, Entries, &str)> = Vec::new();
    // An unchecked copy of a body before the checked one.
    let mut dup = entries.clone();
    dup.insert(object, (object_name.clone(), forged_body.clone()));
    cases.push(("duplicate body", dup, "appears more than once"));
    // A second database copy.
    let mut dup = entries.clone();
    dup.insert(1, (entries[0].0.clone(), b"not a database".to_vec()));
    cases.push(("duplicate database", dup, "appears more than once"));
    // A forged manifest before the real one.
    let mut dup = entries.clone();
    dup.insert(manifest, entries[manifest].clone());
    cases.push(("duplicate manifest", dup, "appears more than once"));
    // A body the manifest does not list.
    let mut extra = entries.clone();
    extra.insert(
        object,
        (
            "objects/messages/2026-01-01/00/unlisted.eml".into(),
            forged_body.clone(),
        ),
    );
    cases.push(("unlisted body", extra, "not in its manifest"));
    // A name that would leave the store.
    let mut escape = entries.clone();
    escape.insert(
        object,
        ("objects/messages/../../../escaped.eml".into(), forged_body),
    );
    cases.push(("path escape", escape, "never writes"));
    // The database copy after a body.
    let mut late = entries.clone();
    let db = late.remove(0);
    late.insert(object, db);
    cases.push(("database not first", late, "first entry"));

    let target = TestServer::prepare(Options::default());
    for (what, entries, needle) in cases {
        let path = target
            .dir
            .path()
            .join(format!("{}.tar", what.replace(' ', "-")));
        write_entries(&path, &entries);
        let out = target.cli(&["restore", "--input", path.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", output(&out));
        assert!(
            output(&out).contains(needle),
            "{what}: {needle}: {}",
            output(&out)
        );
        assert_untouched(&target).await;
    }
    assert!(!target.dir.path().join("escaped.eml").exists());
    // The same entries, rewritten by this test's writer, restore: the refusals above
    // are about what was changed.
    let path = target.dir.path().join("rewritten.tar");
    write_entries(&path, &entries);
    let out = target.cli(&["restore", "--input", path.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", output(&out));
}

/// What a target holds: message ids, rows per table, stored body keys.
async fn holdings(server: &TestServer) -> (Vec<String>, BTreeMap<String, i64>, Vec<String>) {
    use sea_orm::ConnectionTrait;
    let db = server.db().await;
    let backend = db.get_database_backend();
    let ids = db
        .query_all_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT message_id FROM messages ORDER BY message_id",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String>("", "message_id").unwrap())
        .collect();
    let mut counts = BTreeMap::new();
    for table in [
        "domains",
        "users",
        "mailboxes",
        "messages",
        "mailbox_messages",
        "api_keys",
        "audit_log",
        "seaql_migrations",
    ] {
        let n = count(&db, &format!("SELECT COUNT(*) AS n FROM {table}")).await;
        counts.insert(table.to_string(), n);
    }
    if server.backend.is_postgres() {
        let aside = count(
            &db,
            "SELECT COUNT(*) AS n FROM pg_namespace WHERE nspname LIKE 'mairust_before_restore%'",
        )
        .await;
        assert_eq!(aside, 0, "schema left aside");
    }
    db.close().await.ok();
    let mut keys = server.object_keys("messages/").await;
    keys.sort();
    (ids, counts, keys)
}

/// `mairust restore --force` of `archive` into `target`, with PATH set to `path`.
fn restore_with_path(
    target: &TestServer,
    archive: &std::path::Path,
    path: &str,
) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&target.config_path)
        .args(["restore", "--force", "--input"])
        .arg(archive)
        .current_dir(target.dir.path())
        .env("PATH", path)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_bad_database_copy_leaves_the_previous_data_as_it_was() {
    let (source, archive) = backed_up("archived", 3).await;
    let entries = read_entries(&archive);
    let postgres = source.backend.is_postgres();

    // The target holds mail of its own.
    let mut target = TestServer::start();
    assert_eq!(deliver_to_bob(&target, "own@remote.test").await.code, 250);
    target.kill();
    let before = holdings(&target).await;
    assert_eq!(before.0, ["own@remote.test"]);

    let database = entries[0].1.clone();
    let mut cases = vec![(
        "garbage",
        b"this is not a database".repeat(200),
        // PostgreSQL: refused by pg_restore --list before anything is written.
        if postgres {
            "cannot read the archive's database dump"
        } else {
            "archived SQLite database"
        },
    )];
    if postgres {
        // The table of contents is whole (pg_restore --list passes) but the data ends
        // early: the restore fails part-way, after the old schema was renamed aside
        // and the archive's bodies were stored.
        cases.push((
            "truncated",
            database[..database.len() - 200].to_vec(),
            "pg_restore failed while reading the dump",
        ));
    } else {
        cases.push((
            "truncated",
            database[..database.len() / 2].to_vec(),
            "archived SQLite database",
        ));
    }
    for (what, bytes, needle) in cases {
        let mut bad = entries.clone();
        bad[0].1 = bytes;
        reseal(&mut bad);
        let path = target.dir.path().join(format!("{what}.tar"));
        write_entries(&path, &bad);
        let out = target.cli(
            &["restore", "--force", "--input", path.to_str().unwrap()],
            None,
        );
        assert_eq!(out.status.code(), Some(1), "{what}: {}", output(&out));
        assert!(output(&out).contains(needle), "{what}: {}", output(&out));
        assert_eq!(
            holdings(&target).await,
            before,
            "{what}: the target changed"
        );
        assert!(
            !target.dir.path().join("mairust.db.restoring").exists(),
            "{what}: staged copy left behind"
        );
    }
    // The target still serves its own mail.
    target.spawn();
    let rows = target.messages_with_id("own@remote.test").await;
    assert_eq!(rows.len(), 1);
    assert!(target.object(&rows[0].object_key).await.is_some());
    target.kill();
    // And the whole archive does restore over it: the refusals were the bad copies'.
    let out = target.cli(
        &["restore", "--force", "--input", archive.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", output(&out));
    let after = holdings(&target).await;
    assert_eq!(after.0.len(), 3, "{after:?}");
    // The restored database takes the identity of the store it now lives with: the
    // server starts on them and serves the archived mail.
    target.spawn();
    let rows = target.messages_with_id("archived-0@remote.test").await;
    assert!(target.object(&rows[0].object_key).await.is_some());
}

#[tokio::test]
async fn postgres_restore_without_its_client_tools_changes_nothing() {
    if !common::backend_available(
        common::postgres_url().is_some(),
        "MAIRUST_TEST_POSTGRES_URL (a PostgreSQL restore; this run is on SQLite)",
    ) {
        return;
    }
    let mut server = TestServer::start();
    assert_eq!(deliver_to_bob(&server, "kept@remote.test").await.code, 250);
    let archive = server.dir.path().join("backup.tar");
    server.cli_ok(&["backup", "--output", archive.to_str().unwrap()], None);
    // Newer than the backup: a restore that happened would drop it.
    assert_eq!(deliver_to_bob(&server, "newer@remote.test").await.code, 250);
    server.kill();
    let before = holdings(&server).await;
    assert_eq!(before.0, ["kept@remote.test", "newer@remote.test"]);

    // No client tools at all.
    let empty = tempfile::tempdir().unwrap();
    let out = restore_with_path(&server, &archive, empty.path().to_str().unwrap());
    assert_refused(&out, "pg_restore was not found on PATH");
    assert_eq!(holdings(&server).await, before);
    // pg_restore without psql.
    let which = std::process::Command::new("sh")
        .args(["-c", "command -v pg_restore"])
        .output()
        .unwrap();
    let pg_restore = String::from_utf8_lossy(&which.stdout).trim().to_string();
    assert!(!pg_restore.is_empty(), "pg_restore is needed for this test");
    std::os::unix::fs::symlink(&pg_restore, empty.path().join("pg_restore")).unwrap();
    let out = restore_with_path(&server, &archive, empty.path().to_str().unwrap());
    assert_refused(&out, "psql was not found on PATH");
    assert_eq!(holdings(&server).await, before);
    // With the tools, the same archive restores: the newer message is gone.
    let out = server.cli(
        &["restore", "--force", "--input", archive.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", output(&out));
    assert_eq!(holdings(&server).await.0, ["kept@remote.test"]);
}
