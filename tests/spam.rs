//! rspamd scanning against a real rspamd (Debian package) started by the test on a
//! small local configuration with no network rules (`common::rspamd`): the GTUBE test
//! string is refused with 550 5.7.1; a clean message is taken with rspamd's `X-Spam-*`
//! headers (forged ones it came with removed) and its report in the API's message view;
//! `add header` and `rewrite subject` go to Junk, `soft reject` and `greylist` get
//! 451 4.7.1; rspamd is told the envelope. With rspamd stopped, `on_error: accept` takes
//! mail unscanned and `tempfail` defers it, and once `breaker_failures` scans failed the
//! breaker is open and no message waits for the scanner (also shown with a scanner that
//! accepts connections and never answers). With `scan_outbound`, what our users submit
//! is scanned too: their spam does not leave, and their mail carries no verdict.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::api::cli_key;
use common::raw::RawClient;
use common::rspamd::Rspamd;
use common::sink::Sink;
use common::{Options, PASSWORD, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's test pattern for the `add header` action (`enable_test_patterns`).
const YJS: &str = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's test pattern for the `rewrite subject` action.
const ZJS: &str = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// The header the test rule of `common::rspamd` answers to.
const TEST_ACTION: &str = "X-MaiRust-Test-Action";
/// The longest a message may wait at the end of DATA once the breaker is open: far
/// below every `timeout_seconds` used here.
const AT_ONCE: Duration = Duration::from_secs(1);

/// `spam.rspamd` with these settings and `more` (YAML lines under it, indented), and
/// a one-minute cool-down: an open breaker stays open for the rest of a test.
fn spam_yaml(url: &str, on_error: &str, timeout: f64, failures: u32, more: &str) -> String {
    format!(
        "spam:\n  rspamd:\n    url: {url}\n    timeout_seconds: {timeout}\n    on_error: {on_error}\n    breaker_failures: {failures}\n    breaker_cooldown_seconds: 60\n{more}"
    )
}

fn server(url: &str, on_error: &str, timeout: f64) -> TestServer {
    TestServer::start_with(Options::with_yaml(spam_yaml(url, on_error, timeout, 2, "")))
}

fn message(id: &str, body: &str, extra: &str) -> String {
    message_from(
        "Alice <alice@sender.test>",
        "bob@example.test",
        id,
        body,
        extra,
    )
}

fn message_from(from: &str, to: &str, id: &str, body: &str, extra: &str) -> String {
    format!(
        "{extra}From: {from}\r\nTo: <{to}>\r\nSubject: scan {id}\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

/// Over the inbound listener to bob: the reply to the final dot and how long it took.
async fn send(server: &TestServer, data: &str) -> (u16, String, Duration) {
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO mta.sender.test", 250).await;
    c.expect("MAIL FROM:<alice@sender.test>", 250).await;
    c.expect(&format!("RCPT TO:<{}>", TestServer::address("bob")), 250)
        .await;
    c.expect("DATA", 354).await;
    let started = Instant::now();
    c.send(format!("{data}.\r\n").as_bytes()).await;
    let r = c.reply().await.expect("reply to the data");
    (r.code, r.text, started.elapsed())
}

/// The stored message whose Message-ID is `id`, as stored.
async fn stored(server: &TestServer, id: &str) -> String {
    let rows = server.messages_with_id(id).await;
    assert_eq!(rows.len(), 1, "{id} stored once");
    String::from_utf8(server.object(&rows[0].object_key).await.unwrap()).unwrap()
}

/// One sample of `mairust_spam_scans_total`.
fn scans(metrics: &str, result: &str) -> f64 {
    common::sample(
        metrics,
        &format!("mairust_spam_scans_total{{result=\"{result}\"}}"),
    )
}

/// A plaintext session on the submission port, logged in as bob.
async fn bob(server: &TestServer) -> RawClient {
    let (mut c, _) = RawClient::connect(server.submission).await;
    c.expect("EHLO client.test", 250).await;
    let plain = common::base64(&format!("\0{}\0{PASSWORD}", TestServer::address("bob")));
    c.expect(&format!("AUTH PLAIN {plain}"), 235).await;
    c
}

/// Bob submits a message (`scan ID`, `body`, `extra` header lines) to `to` in the
/// open session: the reply to the final dot.
async fn submit(c: &mut RawClient, to: &str, id: &str, body: &str, extra: &str) -> (u16, String) {
    let bob = TestServer::address("bob");
    c.expect(&format!("MAIL FROM:<{bob}>"), 250).await;
    c.expect(&format!("RCPT TO:<{to}>"), 250).await;
    c.expect("DATA", 354).await;
    let data = message_from(&format!("Bob <{bob}>"), to, id, body, extra);
    c.send(format!("{data}.\r\n").as_bytes()).await;
    let r = c.reply().await.expect("reply to the data");
    (r.code, r.text)
}

#[tokio::test]
async fn rspamd_refuses_gtube_and_marks_clean_mail() {
    let Some(mut rspamd) = Rspamd::start() else {
        return;
    };
    let server = server(&rspamd.url(), "accept", 10.0);
    let key = server.admin_key();

    // GTUBE: rspamd says reject.
    let (code, text, _) = send(&server, &message("gtube", GTUBE, "")).await;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.7.1"), "{text}");
    assert!(server.messages_with_id("gtube").await.is_empty());

    // A clean message: taken, with rspamd's headers on top and no forged verdict.
    let clean = message(
        "clean",
        "Hello Bob, lunch at noon on Friday? Alice",
        "X-Spam-Status: No, score=-100 (forged by the sender)\r\nX-Spam-Flag: NO\r\n",
    );
    let (code, text, _) = send(&server, &clean).await;
    assert_eq!(code, 250, "{text}");
    let raw = stored(&server, "clean").await;
    assert!(raw.starts_with("X-Spam-Score: "), "{raw}");
    assert!(raw.contains("\r\nX-Spam-Status: No, score="), "{raw}");
    assert!(raw.contains("\r\nX-Spam-Action: no action\r\n"), "{raw}");
    assert!(
        !raw.contains("forged by the sender") && !raw.contains("X-Spam-Flag"),
        "{raw}"
    );
    let listed = server
        .get_json(&key, "/api/v1/messages?q=scan%20clean")
        .await;
    let spam = &listed["data"][0]["spam"];
    assert_eq!(spam["action"], "no action", "{listed}");
    assert!(spam["score"].is_number() && spam["required_score"].as_f64().unwrap() > 0.0);
    assert!(
        spam["symbols"].as_array().is_some_and(|s| !s.is_empty()),
        "{spam}"
    );
    assert_eq!(listed["data"][0]["mailbox"], "INBOX");

    let metrics = server.metrics_text().await;
    for (result, at_least) in [("reject", 1.0), ("no_action", 1.0)] {
        let n = scans(&metrics, result);
        assert!(n >= at_least, "{result} {n}");
    }

    // rspamd's test pattern for "add header": spam, delivered to Junk with our verdict.
    let (code, text, _) = send(&server, &message("likely-spam", YJS, "")).await;
    assert_eq!(code, 250, "{text}");
    let raw = stored(&server, "likely-spam").await;
    assert!(raw.starts_with("X-Spam-Flag: YES\r\n"), "{raw}");
    assert!(raw.contains("X-Spam-Action: add header"), "{raw}");
    let listed = server
        .get_json(&key, "/api/v1/messages?q=scan%20likely-spam")
        .await;
    assert_eq!(listed["data"][0]["mailbox"], "Junk", "{listed}");

    // rspamd stopped: on_error accept takes mail unscanned, and a verdict the sender
    // wrote is still removed. Two failed scans (breaker_failures) open the breaker;
    // after that no call is made and the answer comes at once.
    rspamd.kill();
    let before = server.metrics_text().await;
    for i in 0..5 {
        let id = format!("unscanned-{i}");
        let (code, text, took) = send(
            &server,
            &message(
                &id,
                "hello again",
                "X-Spam-Status: No, score=-50\r\nX-Spam-Flag: NO\r\n",
            ),
        )
        .await;
        assert_eq!(code, 250, "{text}");
        let raw = stored(&server, &id).await;
        assert!(!raw.contains("X-Spam-"), "{raw}");
        assert!(server.messages_with_id(&id).await[0].spam.is_none());
        if i >= 2 {
            assert!(
                took < AT_ONCE,
                "{id}: the open breaker makes no call: {took:?}"
            );
        }
    }
    let after = server.metrics_text().await;
    let counted = |result: &str| scans(&after, result) - scans(&before, result);
    assert_eq!(
        counted("error"),
        2.0,
        "failed calls until the breaker opened"
    );
    assert_eq!(counted("skipped"), 3.0, "messages taken without a call");
    assert!(server.log_contains("rspamd_breaker_opened"));
}

#[tokio::test]
async fn a_stopped_rspamd_with_tempfail_defers_mail_and_the_open_breaker_answers_at_once() {
    let Some(mut rspamd) = Rspamd::start() else {
        return;
    };
    // A slow scan could take 5 s; three failures in a row open the breaker.
    let server = TestServer::start_with(Options::with_yaml(spam_yaml(
        &rspamd.url(),
        "tempfail",
        5.0,
        3,
        "",
    )));

    // rspamd up: the message is scanned.
    let (code, text, _) = send(&server, &message("scanned", "Hello Bob, see you soon", "")).await;
    assert_eq!(code, 250, "{text}");
    let raw = stored(&server, "scanned").await;
    assert!(raw.starts_with("X-Spam-Score: "), "{raw}");
    assert!(server.messages_with_id("scanned").await[0].spam.is_some());

    rspamd.kill();
    let before = server.metrics_text().await;
    let counted = |now: &str, result: &str| scans(now, result) - scans(&before, result);
    // Each of the first three messages is a call that fails: 451 4.7.1 (the client
    // tries again later), nothing stored.
    for i in 0..3 {
        let id = format!("deferred-{i}");
        let (code, text, _) = send(&server, &message(&id, "hi", "")).await;
        assert_eq!(code, 451, "{text}");
        assert!(
            text.starts_with("4.7.1 spam scanning is unavailable"),
            "{text}"
        );
        assert!(server.messages_with_id(&id).await.is_empty());
    }
    let now = server.metrics_text().await;
    assert_eq!(counted(&now, "error"), 3.0);
    assert_eq!(
        counted(&now, "skipped"),
        0.0,
        "the breaker opens after the third"
    );
    let opened = common::eventually(Duration::from_secs(5), || async {
        server.log_contains("rspamd_breaker_opened")
    })
    .await;
    assert!(opened, "the breaker opening is logged");
    assert!(server.log_contains("rspamd_failed"));

    // Breaker open: the same answer without a call, at once.
    for i in 0..5 {
        let id = format!("at-once-{i}");
        let (code, text, took) = send(&server, &message(&id, "hi", "")).await;
        assert_eq!(code, 451, "{text}");
        assert!(text.starts_with("4.7.1 "), "{text}");
        assert!(
            took < AT_ONCE,
            "{id}: the open breaker makes no call: {took:?}"
        );
        assert!(server.messages_with_id(&id).await.is_empty());
    }
    let now = server.metrics_text().await;
    assert_eq!(counted(&now, "error"), 3.0, "no call once open");
    assert_eq!(counted(&now, "skipped"), 5.0);
}

#[tokio::test]
async fn a_silent_rspamd_defers_mail_and_costs_nothing_once_the_breaker_opens() {
    // A listener that accepts connections and never answers: each scan waits for its
    // timeout (1 s) until two failures open the breaker.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let server = server(&url, "tempfail", 1.0);
    for i in 0..2 {
        let (code, text, took) = send(&server, &message(&format!("slow-{i}"), "hi", "")).await;
        assert_eq!(code, 451, "{text}");
        assert!(text.contains("4.7.1"), "{text}");
        assert!(
            took >= Duration::from_millis(900),
            "waited for the timeout: {took:?}"
        );
    }
    for i in 0..5 {
        let (code, text, took) = send(&server, &message(&format!("fast-{i}"), "hi", "")).await;
        assert_eq!(code, 451, "{text}");
        assert!(
            took < Duration::from_millis(500),
            "the open breaker makes no call: {took:?}"
        );
    }
    assert!(server.log_contains("rspamd_breaker_opened"));
    drop(silent);
}

#[tokio::test]
async fn soft_reject_greylist_and_rewrite_subject_and_the_envelope_rspamd_is_told() {
    let Some(rspamd) = Rspamd::start() else {
        return;
    };
    let server = server(&rspamd.url(), "accept", 10.0);
    let key = server.admin_key();

    // soft reject and greylist (asked for by the test rule): 451 4.7.1 with rspamd's
    // text, nothing stored.
    for action in ["soft reject", "greylist"] {
        let id = format!("asks-{}", action.replace(' ', "-"));
        let extra = format!("{TEST_ACTION}: {action}\r\n");
        let (code, text, _) = send(&server, &message(&id, "hello", &extra)).await;
        assert_eq!(code, 451, "{action}: {text}");
        assert_eq!(text, format!("4.7.1 the test rule asks for {action}"));
        assert!(server.messages_with_id(&id).await.is_empty());
    }

    // rewrite subject: spam, so our headers and Junk; the subject stays as it was
    // (rspamd's rewritten subject is not used).
    let (code, text, _) = send(&server, &message("rewrite", ZJS, "")).await;
    assert_eq!(code, 250, "{text}");
    let raw = stored(&server, "rewrite").await;
    assert!(raw.starts_with("X-Spam-Flag: YES\r\n"), "{raw}");
    assert!(raw.contains("\r\nX-Spam-Status: Yes, score="), "{raw}");
    assert!(
        raw.contains("\r\nX-Spam-Action: rewrite subject\r\n"),
        "{raw}"
    );
    assert!(raw.contains("\r\nSubject: scan rewrite\r\n"), "{raw}");
    assert!(!raw.contains("*** SPAM ***"), "{raw}");
    let listed = server
        .get_json(&key, "/api/v1/messages?q=scan%20rewrite")
        .await;
    assert_eq!(listed["data"][0]["mailbox"], "Junk", "{listed}");
    assert_eq!(listed["data"][0]["spam"]["action"], "rewrite subject");

    // What rspamd is told: the client's address and HELO, MAIL FROM, every recipient
    // and the queue id (the test rule answers it back); no user for mail from outside.
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO mta.sender.test", 250).await;
    c.expect("MAIL FROM:<alice@sender.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    c.expect("RCPT TO:<carol@example.test>", 250).await;
    c.expect("DATA", 354).await;
    let data = message("envelope", "hi", &format!("{TEST_ACTION}: envelope\r\n"));
    c.send(format!("{data}.\r\n").as_bytes()).await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.code, 451, "{}", r.text);
    let (told, queue_id) = r.text.rsplit_once(" queue_id=").expect("a queue id");
    assert_eq!(
        told,
        "4.7.1 envelope ip=127.0.0.1 helo=mta.sender.test from=alice@sender.test rcpt=bob@example.test,carol@example.test user=-"
    );
    assert!(uuid::Uuid::parse_str(queue_id).is_ok(), "{queue_id}");

    let metrics = server.metrics_text().await;
    assert_eq!(scans(&metrics, "soft_reject"), 2.0);
    assert_eq!(scans(&metrics, "greylist"), 1.0);
    assert_eq!(scans(&metrics, "rewrite_subject"), 1.0);
}

#[tokio::test]
async fn outbound_scanning_keeps_our_users_spam_in_and_their_mail_free_of_verdicts() {
    let Some(rspamd) = Rspamd::start() else {
        return;
    };
    let sink = Sink::start();
    let node = |more: &str| {
        TestServer::start_with(Options {
            allow_plaintext_auth: true,
            extra_yaml: format!(
                "{}queue:\n  poll_interval_seconds: 0.2\n{}",
                spam_yaml(&rspamd.url(), "accept", 10.0, 2, more),
                sink.route_yaml(&["remote.test"])
            ),
            ..Options::default()
        })
    };
    let scanning = node("    scan_outbound: true\n");
    let friend = "friend@remote.test";
    let mut c = bob(&scanning).await;

    // Spam from our user: refused whatever rspamd's action, before it can leave.
    let (code, text) = submit(&mut c, friend, "out-gtube", GTUBE, "").await;
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("5.7.1 "), "{text}");
    let (code, text) = submit(&mut c, friend, "out-likely-spam", YJS, "").await;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("looks like spam"), "{text}");
    // The same to a local user goes to their Junk; the report is kept, but our user's
    // mail carries no verdict in its headers.
    let carol = TestServer::address("carol");
    let (code, text) = submit(&mut c, &carol, "to-carol", YJS, "X-Spam-Flag: NO\r\n").await;
    assert_eq!(code, 250, "{text}");
    let raw = stored(&scanning, "to-carol").await;
    assert!(!raw.contains("X-Spam"), "{raw}");
    let rows = scanning.messages_with_id("to-carol").await;
    let report: Value = serde_json::from_str(rows[0].spam.as_deref().unwrap()).unwrap();
    assert_eq!(report["action"], "add header", "{report}");
    let key = scanning.admin_key();
    let listed = scanning
        .get_json(&key, "/api/v1/messages?q=scan%20to-carol")
        .await;
    assert_eq!(listed["data"][0]["mailbox"], "Junk", "{listed}");

    // rspamd is told who submitted it.
    let (code, text) = submit(
        &mut c,
        friend,
        "out-envelope",
        "hi",
        &format!("{TEST_ACTION}: envelope\r\n"),
    )
    .await;
    assert_eq!(code, 451, "{text}");
    assert!(
        text.starts_with("4.7.1 envelope ip=127.0.0.1 helo=client.test from=bob@example.test rcpt=friend@remote.test user=bob@example.test queue_id="),
        "{text}"
    );

    // Clean mail leaves without our verdict, and without one the user wrote.
    let (code, text) = submit(
        &mut c,
        friend,
        "out-clean",
        "Hello friend, the minutes are attached below. Bob",
        "X-Spam-Status: No, score=-100\r\n",
    )
    .await;
    assert_eq!(code, 250, "{text}");
    let m = sink.with_subject("scan out-clean");
    let sent = String::from_utf8_lossy(&m.data);
    assert!(!sent.contains("X-Spam"), "{sent}");

    // POST /send goes through the same scan: GTUBE is refused for good (422). (rspamd
    // looks for the pattern only in a text part longer than it: hence the line end.)
    let send_key = cli_key(&scanning, &["send"]);
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/send", scanning.http))
        .bearer_auth(&send_key)
        .json(&json!({"from": TestServer::address("bob"), "to": [friend], "subject": "scan api-gtube", "text": format!("{GTUBE}\n")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"]["code"], "VALIDATION_ERROR", "{b}");
    assert!(b["error"]["details"].is_null(), "no field is at fault: {b}");
    // The OpenAPI document names that answer, and the other ones POST /send gives.
    let (status, doc) = scanning.http_get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let responses = &doc["paths"]["/api/v1/send"]["post"]["responses"];
    let described = |code: &str| {
        responses[code]["description"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(described("422").contains("rspamd"), "{responses}");
    assert!(described("429").contains("send_limits"), "{responses}");
    assert!(
        described("429").contains("failed authentications"),
        "{responses}"
    );
    assert!(described("503").contains("DKIM"), "{responses}");
    assert!(
        described("503").contains("spam.rspamd.on_error"),
        "{responses}"
    );

    let metrics = scanning.metrics_text().await;
    assert_eq!(scans(&metrics, "reject"), 2.0, "SMTP and the API");
    assert_eq!(scans(&metrics, "add_header"), 2.0);
    assert_eq!(scans(&metrics, "no_action"), 1.0);
    assert!(
        sink.received()
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.data).contains("GTUBE"))
    );

    // Without scan_outbound, our users' mail is not scanned at all.
    let unscanned = node("");
    let mut c = bob(&unscanned).await;
    let (code, text) = submit(&mut c, friend, "out-unscanned", GTUBE, "").await;
    assert_eq!(code, 250, "{text}");
    let m = sink.with_subject("scan out-unscanned");
    assert!(!String::from_utf8_lossy(&m.data).contains("X-Spam"));
    let metrics = unscanned.metrics_text().await;
    for result in ["reject", "no_action", "error", "skipped"] {
        assert_eq!(scans(&metrics, result), 0.0, "{result}");
    }
}
