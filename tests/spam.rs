//! rspamd scanning against a real rspamd (Debian package) started by the test: the
//! GTUBE test string is refused with 550 5.7.1, a clean message is taken with rspamd's
//! `X-Spam-*` headers (forged ones it came with removed) and its report in the API's
//! message view; with rspamd dead, `on_error: accept` takes mail unscanned and
//! `tempfail` defers it, and once the breaker is open no message waits for the scanner.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::raw::RawClient;
use common::rspamd::Rspamd;
use common::{Options, TestServer};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's test pattern for the `add header` action (`enable_test_patterns`).
const YJS: &str = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn server(url: &str, on_error: &str, timeout: f64) -> TestServer {
    TestServer::start_with(Options {
        extra_yaml: format!(
            "spam:\n  rspamd:\n    url: {url}\n    timeout_seconds: {timeout}\n    on_error: {on_error}\n    breaker_failures: 2\n    breaker_cooldown_seconds: 60\n"
        ),
        ..Options::default()
    })
}

fn message(id: &str, body: &str, extra: &str) -> String {
    format!(
        "{extra}From: Alice <alice@sender.test>\r\nTo: <bob@example.test>\r\nSubject: scan {id}\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
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
    let rows = server.messages_with_id("clean").await;
    let raw = String::from_utf8(server.object(&rows[0].object_key).await.unwrap()).unwrap();
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
        let series = format!("mairust_spam_scans_total{{result=\"{result}\"}}");
        let n = common::sample(&metrics, &series);
        assert!(n >= at_least, "{series} {n}");
    }

    // rspamd's test pattern for "add header": spam, delivered to Junk with our verdict.
    let (code, text, _) = send(&server, &message("likely-spam", YJS, "")).await;
    assert_eq!(code, 250, "{text}");
    let rows = server.messages_with_id("likely-spam").await;
    let raw = String::from_utf8(server.object(&rows[0].object_key).await.unwrap()).unwrap();
    assert!(raw.starts_with("X-Spam-Flag: YES\r\n"), "{raw}");
    assert!(raw.contains("X-Spam-Action: add header"), "{raw}");
    let listed = server
        .get_json(&key, "/api/v1/messages?q=scan%20likely-spam")
        .await;
    assert_eq!(listed["data"][0]["mailbox"], "Junk", "{listed}");

    // rspamd stopped: on_error accept takes mail unscanned, and a verdict the sender
    // wrote is still removed.
    rspamd.kill();
    let (code, text, _) = send(
        &server,
        &message(
            "unscanned",
            "hello again",
            "X-Spam-Status: No, score=-50\r\nX-Spam-Flag: NO\r\n",
        ),
    )
    .await;
    assert_eq!(code, 250, "{text}");
    let rows = server.messages_with_id("unscanned").await;
    let raw = String::from_utf8(server.object(&rows[0].object_key).await.unwrap()).unwrap();
    assert!(!raw.contains("X-Spam-"), "{raw}");
    assert!(rows[0].spam.is_none());
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
