//! Rolling upgrade (SPEC O10, issue 17). One test binary plays two releases: without
//! `MAIRUST_TEST_EXTRA_MIGRATIONS` it is the running release; with it, the next release,
//! whose migrations are a test-only additive one and a test-only breaking one (feature
//! `test-migrations`, on in test builds only).
//!
//! The next release's `migrate --check` says which kind each pending migration is;
//! after the additive one, nodes of the running release keep serving and start again;
//! after the breaking one, a running node turns unready and tempfails new mail, and one
//! that starts is refused with a message naming the migration.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, TestServer, deliver_to_bob, output};

const ADDITIVE: &str = "m99999999_000900_test_additive";
const BREAKING: &str = "m99999999_000901_test_breaking";

/// The next release's CLI on the server's configuration.
fn next_release(server: &TestServer, extra: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("MAIRUST_TEST_EXTRA_MIGRATIONS", extra)
        .arg("--config")
        .arg(&server.config_path)
        .args(args)
        .output()
        .expect("run mairust")
}

#[tokio::test]
async fn additive_keeps_old_nodes_serving_breaking_stops_them() {
    let mut server = TestServer::start();
    assert_eq!(
        deliver_to_bob(&server, "before@remote.test").await.code,
        250
    );

    // The next release says its pending migration is additive.
    let out = next_release(&server, "additive", &["migrate", "--check"]);
    let text = output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{ADDITIVE}  additive: nodes of the previous release keep serving"
        )),
        "{text}"
    );
    assert!(text.contains("rolling upgrade possible"), "{text}");
    // --check changed nothing.
    assert!(
        output(&server.cli(&["migrate", "status"], None))
            .lines()
            .all(|l| !l.contains(ADDITIVE))
    );

    let out = next_release(&server, "additive", &["migrate"]);
    assert!(out.status.success(), "{}", output(&out));
    assert!(output(&out).contains(&format!("applying {ADDITIVE}")));

    // The running node of the older release keeps serving (probes run every 0.2 s).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.http_get("/health/ready").await.0, 200);
    assert_eq!(
        deliver_to_bob(&server, "during@remote.test").await.code,
        250
    );
    // It starts again on that schema, saying why.
    server.stop();
    server.spawn();
    assert!(server.log_contains("schema_newer_compatible"));
    assert_eq!(
        deliver_to_bob(&server, "restarted@remote.test").await.code,
        250
    );
    // Its CLI works, with a note; its status lists the newer migration.
    let out = server.cli(&["migrate", "status"], None);
    let text = output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "unknown  {ADDITIVE} (additive, from a newer release)"
        )),
        "{text}"
    );
    let out = server.cli(&["domain", "list"], None);
    assert!(out.status.success(), "{}", output(&out));
    assert!(output(&out).contains("note: the database schema is newer"));

    // A breaking migration: --check says a rolling upgrade is not possible.
    let out = next_release(&server, "additive,breaking", &["migrate", "--check"]);
    let text = output(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{BREAKING}  breaking: nodes of older releases must be stopped"
        )),
        "{text}"
    );
    assert!(text.contains("rolling upgrade not possible"), "{text}");

    // Applied anyway (an operator who ignored it): the running old node stops taking
    // mail and turns unready, naming the migration.
    let out = next_release(&server, "additive,breaking", &["migrate"]);
    assert!(out.status.success(), "{}", output(&out));
    assert!(
        server.wait_ready_status(503, Duration::from_secs(10)).await,
        "old node still ready on a breaking schema"
    );
    let (_, body) = server.http_get("/health/ready").await;
    assert!(
        body["checks"]["database"]["schema"]
            .as_str()
            .unwrap_or("")
            .contains(BREAKING),
        "{body}"
    );
    let (mut c, _) = common::raw::RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    let r = c.cmd("MAIL FROM:<s@remote.test>").await;
    assert_eq!(
        (r.code, r.text.starts_with("4.3.0")),
        (451, true),
        "{}",
        r.text
    );
    assert!(server.log_contains("schema_incompatible"));

    // Restarted as the older release: refused, with the reason.
    server.stop();
    let (status, text) = server.spawn_refused(Duration::from_secs(30));
    assert!(!status.success());
    assert!(text.contains("not compatible with it"), "{text}");
    assert!(text.contains(BREAKING), "{text}");

    // The next release serves it.
    server.options.env = vec![(
        "MAIRUST_TEST_EXTRA_MIGRATIONS".into(),
        "additive,breaking".into(),
    )];
    server.spawn();
    assert_eq!(
        deliver_to_bob(&server, "upgraded@remote.test").await.code,
        250
    );
    server.stop();

    // Rolled back by the next release to the running one's schema: the older release
    // serves again, as if nothing happened.
    let out = next_release(
        &server,
        "additive,breaking",
        &["migrate", "rollback", "--to", "13"],
    );
    assert!(out.status.success(), "{}", output(&out));
    server.options.env.clear();
    server.spawn();
    assert_eq!(server.http_get("/health/ready").await.0, 200);
    assert_eq!(deliver_to_bob(&server, "after@remote.test").await.code, 250);
    for id in ["before", "during", "restarted", "upgraded", "after"] {
        assert_eq!(
            server
                .messages_with_id(&format!("{id}@remote.test"))
                .await
                .len(),
            1,
            "{id}"
        );
    }
}
