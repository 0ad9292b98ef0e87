//! HTTP hooks (SPEC M9) against a real local HTTP receiver that checks the HMAC
//! signature: pre_receive verdicts reach the SMTP client as the right codes, tags land
//! on the stored message, timeouts follow on_timeout, and the circuit breaker opens,
//! keeps SMTP fast while open, and closes again after its cool-down.

mod common;

use std::time::{Duration, Instant};

use common::hook_receiver::{Answer, HookReceiver};
use common::{Options, TestServer, eventually};
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

use common::deliver_to_bob as send;

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

#[tokio::test]
async fn hooks_created_through_the_api_take_effect() {
    let receiver = HookReceiver::start(SECRET);
    let configured = HookReceiver::start(SECRET);
    let server = TestServer::start_with(options(&[hook(
        "from-config",
        "post_receive",
        &configured.url(),
        "",
    )]));
    let key = server
        .cli_ok(&["admin", "create-key", "--scope", "admin"], None)
        .trim()
        .to_string();
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}/api/v1{path}", server.http);
    let call = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut request = client.request(method, url(path)).bearer_auth(&key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let new = json!({
        "id": "api-policy",
        "event": "pre_receive",
        "url": receiver.url(),
        "secret": SECRET,
        "timeout_ms": 1000
    });
    let (s, b) = call(reqwest::Method::POST, "/hooks", Some(new.clone())).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (b["source"].clone(), b["enabled"].clone()),
        (json!("api"), json!(true))
    );
    assert!(!b.to_string().contains(SECRET), "secret not shown");
    let (s, _) = call(reqwest::Method::POST, "/hooks", Some(new)).await;
    assert_eq!(s, 409, "duplicate id");
    let (s, b) = call(
        reqwest::Method::POST,
        "/hooks",
        Some(json!({"id": "x", "event": "pre_receive", "url": "ftp://nope", "secret": SECRET})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["details"][0]["field"].clone()),
        (422, json!("url"))
    );
    let (s, _) = call(
        reqwest::Method::POST,
        "/hooks",
        Some(json!({"id": "y", "event": "pre_receive", "url": receiver.url(), "secret": SECRET, "colour": 1})),
    )
    .await;
    assert_eq!(s, 422, "unknown field");

    // Active at once on this node.
    receiver.script(&[Answer::json(
        json!({"action": "reject", "message": "api says no"}),
    )]);
    let r = send(&server, "via-api@remote.test").await;
    assert_eq!((r.code, r.text.as_str()), (550, "5.7.1 api says no"));
    assert!(receiver.calls()[0].signature_ok);

    // Replaced: disabled, so the next message passes without a call.
    let (s, b) = call(
        reqwest::Method::PUT,
        "/hooks/api-policy",
        Some(json!({"event": "pre_receive", "url": receiver.url(), "secret": SECRET, "enabled": false})),
    )
    .await;
    assert_eq!((s, b["enabled"].clone()), (200, json!(false)), "{b}");
    assert_eq!(send(&server, "disabled@remote.test").await.code, 250);
    assert_eq!(receiver.calls().len(), 1);

    // config.yaml hooks are read-only here; API hooks can go.
    let (s, b) = call(reqwest::Method::GET, "/hooks", None).await;
    assert_eq!(s, 200);
    let sources: Vec<_> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].clone(), h["source"].clone()))
        .collect();
    assert_eq!(
        sources,
        [
            (json!("from-config"), json!("config")),
            (json!("api-policy"), json!("api"))
        ]
    );
    let (s, _) = call(reqwest::Method::DELETE, "/hooks/from-config", None).await;
    assert_eq!(s, 409);
    let (s, _) = call(reqwest::Method::DELETE, "/hooks/api-policy", None).await;
    assert_eq!(s, 204);
    let (s, _) = call(reqwest::Method::GET, "/hooks/api-policy", None).await;
    assert_eq!(s, 404);
}
