//! HTTP hooks (SPEC M9) against a real local HTTP receiver that checks the HMAC
//! signature: pre_receive verdicts reach the SMTP client as the right codes, tags land
//! on the stored message, timeouts follow on_timeout, and the circuit breaker opens,
//! keeps SMTP fast while open, and closes again after its cool-down.

mod common;

use std::time::{Duration, Instant};

use common::hook_receiver::{Answer, HookReceiver};
use common::raw::RawClient;
use common::{Options, TestServer, eventually, message};
use serde_json::json;

const SECRET: &str = "a-secret-of-enough-length";

fn options(hooks: &[String]) -> Options {
    Options {
        extra_yaml: format!("hooks:\n{}", hooks.concat()),
        ..Options::default()
    }
}

fn hook(id: &str, event: &str, url: &str, extra: &str) -> String {
    format!("  - id: {id}\n    event: {event}\n    url: {url}\n    secret: {SECRET}\n{extra}")
}

/// One message to bob over the inbound listener; returns the reply to the final dot.
async fn send(server: &TestServer, message_id: &str) -> common::raw::RawReply {
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@remote.test>", 250).await;
    c.expect(&format!("RCPT TO:<{}>", TestServer::address("bob")), 250)
        .await;
    c.expect("DATA", 354).await;
    let body = message(
        "a@remote.test",
        &TestServer::address("bob"),
        message_id,
        "hi",
    );
    c.send(format!("{body}.\r\n").as_bytes()).await;
    c.reply().await.expect("reply to the data")
}

#[tokio::test]
async fn pre_receive_verdicts_become_smtp_replies_and_tags() {
    let receiver = HookReceiver::start(SECRET);
    let server = TestServer::start_with(options(&[hook(
        "policy",
        "pre_receive",
        &receiver.url(),
        "",
    )]));
    receiver.script(&[
        Answer::json(json!({"action": "reject", "message": "spam detected"})),
        Answer::json(json!({"action": "tempfail", "message": "greylisted"})),
        Answer::json(json!({"action": "allow", "tags": ["scanned", "bad tag!"]})),
    ]);
    let r = send(&server, "reject@remote.test").await;
    assert_eq!((r.code, r.text.as_str()), (550, "5.7.1 spam detected"));
    let r = send(&server, "tempfail@remote.test").await;
    assert_eq!((r.code, r.text.as_str()), (451, "4.7.1 greylisted"));
    let r = send(&server, "allow@remote.test").await;
    assert_eq!(r.code, 250, "{r:?}");

    assert!(
        server
            .messages_with_id("reject@remote.test")
            .await
            .is_empty()
    );
    assert!(
        server
            .messages_with_id("tempfail@remote.test")
            .await
            .is_empty()
    );
    let stored = server.messages_with_id("allow@remote.test").await;
    assert_eq!(stored.len(), 1);
    let db = server.db().await;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let entry = mairust_entities::mailbox_message::Entity::find()
        .filter(mairust_entities::mailbox_message::Column::MessageId.eq(&stored[0].id))
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    db.close().await.ok();
    assert_eq!(entry.tags, "scanned", "valid tags only");

    let calls = receiver.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.signature_ok), "HMAC verified");
    assert!(calls.iter().all(|c| c.hook == "policy"));
    let m = &calls[2].body["message"];
    assert_eq!(calls[2].body["event"], "pre_receive");
    assert_eq!(m["envelope_from"], "a@remote.test");
    assert_eq!(m["recipients"], json!([TestServer::address("bob")]));
    assert_eq!(m["message_id"], "allow@remote.test");
    assert!(
        m["raw"].as_str().is_some_and(|r| !r.is_empty()),
        "the message itself"
    );
}

#[tokio::test]
async fn timeouts_follow_on_timeout() {
    let slow = Answer {
        delay: Duration::from_millis(1500),
        ..Answer::json(json!({"action": "allow"}))
    };
    let tempfailing = HookReceiver::start(SECRET);
    tempfailing.always(slow.clone());
    let server = TestServer::start_with(options(&[hook(
        "slow",
        "pre_receive",
        &tempfailing.url(),
        "    timeout_ms: 300\n    on_timeout: tempfail\n",
    )]));
    let started = Instant::now();
    let r = send(&server, "slow1@remote.test").await;
    assert_eq!(r.code, 451, "{r:?}");
    assert!(r.text.starts_with("4.7.1"), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "did not wait for the hook"
    );
    drop(server);

    let allowing = HookReceiver::start(SECRET);
    allowing.always(slow);
    let server = TestServer::start_with(options(&[hook(
        "slow",
        "pre_receive",
        &allowing.url(),
        "    timeout_ms: 300\n    on_timeout: allow\n",
    )]));
    let r = send(&server, "slow2@remote.test").await;
    assert_eq!(r.code, 250, "{r:?}");
}

#[tokio::test]
async fn breaker_opens_keeps_smtp_fast_and_recovers() {
    let receiver = HookReceiver::start(SECRET);
    // Each failing call takes a second, so a skipped call is plain to see.
    receiver.always(Answer {
        status: 500,
        body: "{}".into(),
        delay: Duration::from_millis(1000),
    });
    let server = TestServer::start_with(options(&[hook(
        "flaky",
        "pre_receive",
        &receiver.url(),
        "    on_error: allow\n    breaker_failures: 3\n    breaker_cooldown_seconds: 2\n",
    )]));
    for n in 0..3 {
        let r = send(&server, &format!("fail{n}@remote.test")).await;
        assert_eq!(r.code, 250, "on_error allow: {r:?}");
    }
    assert_eq!(receiver.calls().len(), 3);
    assert!(server.log_contains("breaker_open"));
    // Open: not called, and the SMTP answer does not wait for it.
    for n in 0..3 {
        let started = Instant::now();
        let r = send(&server, &format!("open{n}@remote.test")).await;
        assert_eq!(r.code, 250);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "fast while open: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(receiver.calls().len(), 3, "skipped while open");
    // After the cool-down one trial goes through; it succeeds and the breaker closes.
    receiver.always(Answer::json(json!({"action": "allow"})));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = send(&server, "trial@remote.test").await;
    assert_eq!(r.code, 250);
    assert_eq!(receiver.calls().len(), 4, "half-open trial");
    assert!(server.log_contains("breaker_closed"));
    send(&server, "closed@remote.test").await;
    assert_eq!(receiver.calls().len(), 5);
}

#[tokio::test]
async fn post_receive_is_told_after_storage() {
    let receiver = HookReceiver::start(SECRET);
    let server = TestServer::start_with(options(&[hook(
        "notify",
        "post_receive",
        &receiver.url(),
        "",
    )]));
    let r = send(&server, "told@remote.test").await;
    assert_eq!(r.code, 250);
    assert!(
        eventually(Duration::from_secs(5), || async {
            receiver.calls().len() == 1
        })
        .await
    );
    let call = &receiver.calls()[0];
    assert!(call.signature_ok);
    assert_eq!(call.body["event"], "post_receive");
    let stored = server.messages_with_id("told@remote.test").await;
    assert_eq!(
        call.body["message"]["id"],
        stored[0].id.as_str(),
        "the stored message"
    );
    assert!(call.body["message"].get("raw").is_none());
}

#[tokio::test]
async fn the_api_shows_resets_and_tests_hooks() {
    let receiver = HookReceiver::start(SECRET);
    receiver.always(Answer {
        status: 503,
        body: "{}".into(),
        delay: Duration::ZERO,
    });
    let server = TestServer::start_with(options(&[hook(
        "flaky",
        "pre_receive",
        &receiver.url(),
        "    breaker_failures: 1\n    breaker_cooldown_seconds: 600\n",
    )]));
    let key = server
        .cli_ok(&["admin", "create-key", "--scope", "admin"], None)
        .trim()
        .to_string();
    let client = reqwest::Client::new();
    let api = |path: &str| format!("http://{}/api/v1{path}", server.http);
    let post = |path: &str| {
        let request = client.post(api(path)).bearer_auth(&key);
        async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(send(&server, "first@remote.test").await.code, 250);
    let list: serde_json::Value = client
        .get(api("/hooks"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["id"], "flaky");
    assert_eq!(list["data"][0]["breaker"]["state"], "open", "{list}");
    assert!(
        list.to_string().find(SECRET).is_none(),
        "the secret is never shown"
    );

    // Open for ten minutes: a reset by hand lets the next message call the hook again.
    send(&server, "skipped@remote.test").await;
    assert_eq!(receiver.calls().len(), 1);
    let reset = post("/hooks/flaky/reset").await;
    assert_eq!(reset["breaker"]["state"], "closed", "{reset}");
    receiver.always(Answer::json(json!({"action": "allow"})));
    send(&server, "after-reset@remote.test").await;
    assert_eq!(receiver.calls().len(), 2);

    let test = post("/hooks/flaky/test").await;
    assert_eq!(test["ok"], true, "{test}");
    assert_eq!(test["status"], 200);
    let last = receiver.calls().pop().unwrap();
    assert!(last.signature_ok && last.body["test"] == true);
    let missing = client
        .post(api("/hooks/nope/test"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
