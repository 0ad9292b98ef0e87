//! HTTP hooks (SPEC M9) against a real local HTTP receiver that checks the HMAC
//! signature: pre_receive verdicts reach the SMTP client as the right codes, tags land
//! on the stored message, timeouts follow on_timeout, and the circuit breaker opens,
//! keeps SMTP fast while open (the reply does not wait for a slow hook), and closes
//! again after its cool-down. `hook_policy`:
//! loopback targets (by address or by name) are refused unless allowed, a reload that
//! narrows the policy leaves no kept-alive connection behind, redirects are not
//! followed, answers are read up to a cap, and the API's test call tells only status
//! and latency (a disabled hook's refusal audited too).

mod common;

use std::time::{Duration, Instant};

use common::api::Api;
use common::hook_receiver::{ALLOW_LOOPBACK, Answer, HookReceiver};
use common::{Options, TestServer, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SECRET: &str = "a-secret-of-enough-length";

/// The receivers listen on 127.0.0.1, which these servers allow.
fn options(hooks: &[String]) -> Options {
    Options::with_yaml(format!("{ALLOW_LOOPBACK}hooks:\n{}", hooks.concat()))
}

/// The default `hook_policy`: no loopback.
fn default_policy(hooks: &[String]) -> Options {
    Options::with_yaml(format!("hooks:\n{}", hooks.concat()))
}

fn hook(id: &str, event: &str, url: &str, extra: &str) -> String {
    format!("  - id: {id}\n    event: {event}\n    url: {url}\n    secret: {SECRET}\n{extra}")
}

use common::deliver_to_bob as send;

/// POST /hooks/{id}/test with the admin key `key`: how the call went (200).
async fn test_call(api: &Api<'_>, key: &str, id: &str) -> Value {
    let path = format!("/hooks/{id}/test");
    api.expect(Method::POST, &path, Some(key), None, StatusCode::OK)
        .await
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

/// Sends one message to bob; returns the reply to the final dot and how long it took
/// to come: the part of the transaction where pre_receive hooks run.
async fn timed_send(server: &TestServer, message_id: &str) -> (u16, Duration) {
    let (mut c, _) = common::raw::RawClient::connect(server.inbound).await;
    c.begin_data(&TestServer::address("bob")).await;
    let body = common::message(
        "s@remote.test",
        &TestServer::address("bob"),
        message_id,
        "hi",
    );
    let started = Instant::now();
    c.send(format!("{body}.\r\n").as_bytes()).await;
    let code = c.reply().await.expect("reply to the data").code;
    (code, started.elapsed())
}

#[tokio::test]
async fn breaker_opens_keeps_smtp_fast_and_recovers() {
    // Each failing call takes this long: a call the reply waited for takes at least
    // this, one it did not wait for has no reason to come near it.
    const HOOK_DELAY: Duration = Duration::from_secs(3);
    let receiver = HookReceiver::start(SECRET);
    receiver.always(Answer {
        status: 500,
        delay: HOOK_DELAY,
        ..Answer::json(json!({}))
    });
    let server = TestServer::start_with(options(&[hook(
        "flaky",
        "pre_receive",
        &receiver.url(),
        "    on_error: allow\n    timeout_ms: 10000\n    breaker_failures: 2\n    breaker_cooldown_seconds: 5\n",
    )]));
    for n in 0..2 {
        let (code, took) = timed_send(&server, &format!("fail{n}@remote.test")).await;
        assert_eq!(code, 250, "on_error allow");
        assert!(
            took >= HOOK_DELAY,
            "the reply waited for the hook: {took:?}"
        );
    }
    assert_eq!(receiver.calls().len(), 2);
    assert!(server.log_contains("breaker_open"));
    // Open: not called, and the reply does not wait for it.
    let (code, took) = timed_send(&server, "open@remote.test").await;
    assert_eq!(code, 250);
    assert!(took < HOOK_DELAY, "waited while open: {took:?}");
    assert_eq!(receiver.calls().len(), 2, "skipped while open");
    // After the cool-down one trial goes through; it succeeds and the breaker closes.
    receiver.always(Answer::json(json!({"action": "allow"})));
    let mut sent = 0;
    let trial = eventually(Duration::from_secs(15), || {
        sent += 1;
        let id = format!("trial{sent}@remote.test");
        let (server, receiver) = (&server, &receiver);
        async move {
            assert_eq!(timed_send(server, &id).await.0, 250);
            receiver.calls().len() > 2
        }
    })
    .await;
    assert!(trial, "no trial call after the cool-down");
    assert_eq!(receiver.calls().len(), 3, "one trial");
    assert!(server.log_contains("breaker_half_open"));
    assert!(server.log_contains("breaker_closed"));
    send(&server, "closed@remote.test").await;
    assert_eq!(receiver.calls().len(), 4, "closed: called again");
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
        ..Answer::json(json!({}))
    });
    let server = TestServer::start_with(options(&[hook(
        "flaky",
        "pre_receive",
        &receiver.url(),
        "    breaker_failures: 1\n    breaker_cooldown_seconds: 600\n",
    )]));
    let key = server.admin_key();
    let api = Api::new(&server);
    assert_eq!(send(&server, "first@remote.test").await.code, 250);
    let list = api.get_ok(&key, "/hooks").await;
    assert_eq!(list["data"][0]["id"], "flaky");
    assert_eq!(list["data"][0]["breaker"]["state"], "open", "{list}");
    assert!(
        list.to_string().find(SECRET).is_none(),
        "the secret is never shown"
    );

    // Open for ten minutes: a reset by hand lets the next message call the hook again.
    send(&server, "skipped@remote.test").await;
    assert_eq!(receiver.calls().len(), 1);
    let reset = api
        .expect(
            Method::POST,
            "/hooks/flaky/reset",
            Some(&key),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(reset["breaker"]["state"], "closed", "{reset}");
    receiver.always(Answer::json(json!({"action": "allow"})));
    send(&server, "after-reset@remote.test").await;
    assert_eq!(receiver.calls().len(), 2);

    let test = test_call(&api, &key, "flaky").await;
    assert_eq!(test["ok"], true, "{test}");
    assert_eq!(test["status"], 200);
    let last = receiver.calls().pop().unwrap();
    assert!(last.signature_ok && last.body["test"] == true);
    let missing = "/hooks/nope/test";
    api.expect(
        Method::POST,
        missing,
        Some(&key),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
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
    let key = server.admin_key();
    let api = Api::new(&server);
    // POST /hooks with `body`, which must answer `want`: the answer.
    let create = |body: Value, want: StatusCode| {
        api.expect(Method::POST, "/hooks", Some(&key), Some(body), want)
    };
    let new = json!({
        "id": "api-policy",
        "event": "pre_receive",
        "url": receiver.url(),
        "secret": SECRET,
        "timeout_ms": 1000
    });
    let b = create(new.clone(), StatusCode::CREATED).await;
    assert_eq!(
        (b["source"].clone(), b["enabled"].clone()),
        (json!("api"), json!(true))
    );
    assert!(!b.to_string().contains(SECRET), "secret not shown");
    // A duplicate id.
    create(new, StatusCode::CONFLICT).await;
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    let ftp = json!({"id": "x", "event": "pre_receive", "url": "ftp://nope", "secret": SECRET});
    let b = create(ftp, invalid).await;
    assert_eq!(b["error"]["details"][0]["field"], json!("url"), "{b}");
    // An unknown field.
    let colour = json!({
        "id": "y", "event": "pre_receive", "url": receiver.url(), "secret": SECRET, "colour": 1
    });
    create(colour, invalid).await;

    // Active at once on this node.
    receiver.script(&[Answer::json(
        json!({"action": "reject", "message": "api says no"}),
    )]);
    let r = send(&server, "via-api@remote.test").await;
    assert_eq!((r.code, r.text.as_str()), (550, "5.7.1 api says no"));
    assert!(receiver.calls()[0].signature_ok);

    // Replaced: disabled, so the next message passes without a call.
    let disabled = json!({
        "event": "pre_receive", "url": receiver.url(), "secret": SECRET, "enabled": false
    });
    let b = api
        .expect(
            Method::PUT,
            "/hooks/api-policy",
            Some(&key),
            Some(disabled),
            StatusCode::OK,
        )
        .await;
    assert_eq!(b["enabled"], json!(false), "{b}");
    assert_eq!(send(&server, "disabled@remote.test").await.code, 250);
    assert_eq!(receiver.calls().len(), 1);

    // config.yaml hooks are read-only here; API hooks can go.
    let b = api.get_ok(&key, "/hooks").await;
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
    // Its series are listed (at 0) while it exists...
    let series = |text: String| {
        text.lines()
            .any(|l| l.contains("hook=\"api-policy\"") || l.contains("plugin=\"api-policy\""))
    };
    assert!(
        series(server.metrics_text().await),
        "no series for the new hook"
    );
    for (method, path, want) in [
        (Method::DELETE, "/hooks/from-config", StatusCode::CONFLICT),
        (Method::DELETE, "/hooks/api-policy", StatusCode::NO_CONTENT),
        (Method::GET, "/hooks/api-policy", StatusCode::NOT_FOUND),
    ] {
        api.expect(method, path, Some(&key), None, want).await;
    }
    // ...and gone with it (hooks made and removed through the API do not pile up).
    assert!(!series(server.metrics_text().await), "series left behind");
}

/// `mairust_hook_calls_total{hook, result}` as the server exports it (0 when absent).
async fn hook_calls(server: &TestServer, hook: &str, result: &str) -> f64 {
    let text = server.metrics_text().await;
    let (hook, result) = (format!("hook=\"{hook}\""), format!("result=\"{result}\""));
    text.lines()
        .filter(|l| l.starts_with("mairust_hook_calls_total{"))
        .filter(|l| l.contains(&hook) && l.contains(&result))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The server's log lines with this `event`, once there are `n` of them (the log is
/// read from the server's output as it comes).
async fn events(server: &TestServer, event: &str, n: usize) -> Vec<Value> {
    let found = || {
        server
            .log_lines()
            .into_iter()
            .filter(|l| l["event"] == event)
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(10), || async { found().len() >= n }).await;
    found()
}

#[tokio::test]
async fn loopback_targets_are_refused_by_address_and_by_name() {
    let receiver = HookReceiver::start(SECRET);
    let port = receiver.addr.port();
    let server = TestServer::start_with(default_policy(&[
        hook(
            "by-address",
            "pre_receive",
            &format!("http://127.0.0.1:{port}/"),
            "    on_error: allow\n    breaker_failures: 1\n",
        ),
        hook(
            "by-name",
            "pre_receive",
            &format!("http://localhost:{port}/hook"),
            "    on_error: reject\n",
        ),
    ]));
    // by-address is refused and allows (its on_error); by-name is refused and rejects.
    let r = send(&server, "refused@remote.test").await;
    assert_eq!(
        (r.code, r.text.as_str()),
        (550, "5.7.1 rejected by policy (error)")
    );
    assert!(receiver.calls().is_empty(), "no request reached the target");

    let refused = events(&server, "hook_target_refused", 2).await;
    let by = |id: &str| {
        refused
            .iter()
            .find(|l| l["hook"] == id)
            .unwrap_or_else(|| panic!("no refusal of {id}: {refused:?}"))
            .clone()
    };
    let (address, name) = (by("by-address"), by("by-name"));
    assert_eq!(
        (&address["host"], &address["address"], &address["range"]),
        (&json!("127.0.0.1"), &json!("127.0.0.1"), &json!("loopback"))
    );
    assert_eq!(name["host"], "localhost");
    let resolved: std::net::IpAddr = name["address"].as_str().unwrap().parse().unwrap();
    assert!(resolved.is_loopback(), "{name}");
    assert_eq!(address["level"], "warn");
    // A refusal is a hook error: counted, and it opens the breaker like one.
    assert_eq!(hook_calls(&server, "by-address", "error").await, 1.0);
    assert_eq!(hook_calls(&server, "by-name", "error").await, 1.0);
    let opened = events(&server, "breaker_open", 1).await;
    assert_eq!(opened[0]["hook"], "by-address", "{opened:?}");

    // Hooks created through the API obey the same policy: a refused IP literal at once,
    // a name at each call.
    let key = server.admin_key();
    let api = Api::new(&server);
    // POST /hooks of a hook calling `url`, which must answer `want`: the answer.
    let create = |url: String, want: StatusCode| {
        let hook = json!({"id": "api-hook", "event": "post_receive", "url": url, "secret": SECRET});
        api.expect(Method::POST, "/hooks", Some(&key), Some(hook), want)
    };
    for literal in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let body = create(literal.clone(), StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(
            body["error"]["details"][0]["field"], "url",
            "{literal}: {body}"
        );
    }
    create(format!("http://localhost:{port}/hook"), StatusCode::CREATED).await;
    let test = test_call(&api, &key, "api-hook").await;
    assert_eq!(
        (&test["ok"], &test["status"], &test["error"]),
        (&json!(false), &json!(null), &json!("target_refused")),
        "{test}"
    );
    assert!(
        receiver.calls().is_empty(),
        "still nothing reached the target"
    );
}

/// Names are checked when a connection is opened, and the server keeps hook
/// connections alive: a reload that takes a network out of `allowed_networks` must not
/// leave a hook on the connection it opened before.
#[tokio::test]
async fn a_reload_that_narrows_hook_policy_drops_kept_alive_connections() {
    let receiver = HookReceiver::start(SECRET);
    receiver.always(Answer {
        keep_alive: true,
        ..Answer::json(json!({"action": "allow"}))
    });
    let port = receiver.addr.port();
    let server = TestServer::start_with(options(&[hook(
        "kept",
        "pre_receive",
        &format!("http://localhost:{port}/hook"),
        "    on_error: reject\n",
    )]));
    for id in ["kept-1@remote.test", "kept-2@remote.test"] {
        let r = send(&server, id).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert_eq!(receiver.calls().len(), 2);
    assert_eq!(
        receiver.connections(),
        1,
        "the second call went over the first call's connection"
    );

    let original = std::fs::read_to_string(&server.config_path).unwrap();
    let narrowed = original.replace(ALLOW_LOOPBACK, "");
    assert_ne!(narrowed, original);
    std::fs::write(&server.config_path, &narrowed).unwrap();
    let out = server.cli_ok(&["reload"], None);
    assert!(out.contains("hook_policy"), "{out}");

    let r = send(&server, "kept-3@remote.test").await;
    assert_eq!(
        (r.code, r.text.as_str()),
        (550, "5.7.1 rejected by policy (error)"),
        "refused under the new policy"
    );
    assert_eq!(
        receiver.calls().len(),
        2,
        "nothing sent over the old connection"
    );
    let refused = events(&server, "hook_target_refused", 1).await;
    assert_eq!(
        (
            &refused[0]["hook"],
            &refused[0]["host"],
            &refused[0]["range"]
        ),
        (&json!("kept"), &json!("localhost"), &json!("loopback")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let elsewhere = HookReceiver::start(SECRET);
    let moved = HookReceiver::start(SECRET);
    moved.always(Answer::redirect(&elsewhere.url()));
    let server = TestServer::start_with(options(&[hook(
        "moved",
        "pre_receive",
        &moved.url(),
        "    on_error: tempfail\n",
    )]));
    let r = send(&server, "redirected@remote.test").await;
    assert_eq!(r.code, 451, "a 3xx is an error (on_error tempfail): {r:?}");
    assert_eq!(moved.calls().len(), 1);
    assert_eq!(hook_calls(&server, "moved", "error").await, 1.0);
    let errors = events(&server, "hook_error", 1).await;
    assert!(
        errors[0]["error"].as_str().unwrap().contains("307"),
        "{errors:?}"
    );

    let key = server.admin_key();
    let test = test_call(&Api::new(&server), &key, "moved").await;
    assert_eq!((&test["ok"], &test["status"]), (&json!(false), &json!(307)));
    assert_eq!(moved.calls().len(), 2);
    assert!(
        elsewhere.calls().is_empty(),
        "neither the message nor its signature went to the redirect's target"
    );
}

#[tokio::test]
async fn answers_past_the_size_cap_are_errors() {
    let receiver = HookReceiver::start(SECRET);
    let big = json!({"action": "allow", "message": "x".repeat(2000)});
    receiver.script(&[
        Answer::json(big.clone()),
        // Without a Content-Length: the cap holds on the bytes read.
        Answer {
            no_length: true,
            ..Answer::json(big)
        },
        Answer::json(json!({"action": "allow"})),
    ]);
    let server = TestServer::start_with(Options::with_yaml(format!(
        "hook_policy:\n  allowed_networks: [127.0.0.0/8]\n  max_response_bytes: 1024\nhooks:\n{}",
        hook(
            "chatty",
            "pre_receive",
            &receiver.url(),
            "    on_error: reject\n    breaker_failures: 10\n"
        )
    )));
    assert_eq!(send(&server, "big-sized@remote.test").await.code, 550);
    assert_eq!(send(&server, "big-no_length@remote.test").await.code, 550);
    assert_eq!(
        send(&server, "small@remote.test").await.code,
        250,
        "an answer under the cap is read"
    );
    assert_eq!(receiver.calls().len(), 3);
    assert_eq!(hook_calls(&server, "chatty", "error").await, 2.0);
    assert_eq!(hook_calls(&server, "chatty", "allow").await, 1.0);
    let errors = events(&server, "hook_error", 2).await;
    assert!(
        errors
            .iter()
            .all(|e| e["error"].as_str().unwrap().contains("max_response_bytes")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn test_calls_tell_status_and_latency_only_and_are_audited() {
    let receiver = HookReceiver::start(SECRET);
    receiver.always(Answer {
        status: 418,
        ..Answer::json(json!({"internal": "do-not-leak-this"}))
    });
    let server = TestServer::start_with(options(&[
        hook("probe", "pre_receive", &receiver.url(), ""),
        hook(
            "paused",
            "pre_receive",
            &receiver.url(),
            "    enabled: false\n",
        ),
    ]));
    let key = server.admin_key();
    let api = Api::new(&server);

    // The answer as sent, to be sure nothing of the hook's body is in it.
    let resp = api
        .request(Method::POST, "/hooks/probe/test")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("do-not-leak-this"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["error", "latency_ms", "ok", "status"], "{body}");
    assert_eq!(
        (&body["ok"], &body["status"], &body["error"]),
        (&json!(false), &json!(418), &json!(null))
    );
    assert_eq!(receiver.calls().len(), 1);

    let paused = "/hooks/paused/test";
    api.expect(Method::POST, paused, Some(&key), None, StatusCode::CONFLICT)
        .await;
    assert_eq!(receiver.calls().len(), 1, "a disabled hook is not called");

    // Newest first: the refused test of the disabled hook, then the completed call.
    let audit = server.get_json(&key, "/api/v1/audit?event=hook.test").await;
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    let (refused, completed) = (&entries[0], &entries[1]);
    assert_eq!(completed["target"], "probe");
    assert_eq!(completed["outcome"], "success");
    assert_eq!(completed["details"]["status"], 418, "{audit}");
    assert_eq!(refused["target"], "paused");
    assert_eq!(refused["outcome"], "failure");
    assert_eq!(refused["details"], json!({"reason": "disabled"}), "{audit}");
    for entry in entries {
        assert!(
            entry["actor"].as_str().unwrap().starts_with("api-key:"),
            "{audit}"
        );
        assert!(entry["remote"].is_string(), "{audit}");
    }
}
