//! Logs and traces (SPEC O2, O4, O15): JSON log fields, the log level changed by SIGHUP
//! and `mairust reload` without a restart, size rotation with gzip, and the OTLP span
//! trees of one SMTP transaction and one API request received by an in-test collector.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::hook_receiver::{ALLOW_LOOPBACK, HookReceiver};
use common::otlp::{OtlpReceiver, Span};
use common::{Options, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mairust");

/// One message to bob over the inbound listener.
async fn send_one(server: &TestServer, message_id: &str) {
    assert_eq!(common::deliver_to_bob(server, message_id).await.code, 250);
}

#[tokio::test]
async fn json_lines_carry_component_and_request_or_session_id() {
    let server = TestServer::start();
    send_one(&server, "json-log@remote.test").await;
    let key = server.admin_key();
    let resp = reqwest::Client::new()
        .get(format!("http://{}/api/v1/domains", server.http))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = server.log_lines();
        if lines
            .iter()
            .any(|l| l["event"] == "request" && l["route"] == "/api/v1/domains")
            || Instant::now() > deadline
        {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let components = [
        "smtp",
        "api",
        "queue",
        "storage",
        "hook",
        "supervisor",
        "audit",
    ];
    for line in &lines {
        assert!(
            line["timestamp"]
                .as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
            "{line}"
        );
        assert!(
            ["trace", "debug", "info", "warn", "error"].contains(&line["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(
            components.contains(&line["component"].as_str().unwrap()),
            "{line}"
        );
        assert!(line["message"].is_string(), "{line}");
    }
    let stored = lines
        .iter()
        .find(|l| l["event"] == "message_stored")
        .expect("message_stored logged");
    assert_eq!(stored["component"], "smtp");
    assert_eq!(stored["session_id"].as_str().unwrap().len(), 12, "{stored}");
    let request = lines
        .iter()
        .find(|l| l["event"] == "request" && l["route"] == "/api/v1/domains")
        .expect("access log line");
    assert_eq!(request["component"], "api");
    assert_eq!(request["request_id"], request_id.as_str());
    assert_eq!(request["status"], 200);
    assert_eq!(request["method"], "GET");
}

/// Waits for a log line, after the first `from` lines, that `found` accepts.
async fn wait_log(server: &TestServer, from: usize, found: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log_lines().iter().skip(from).any(&found) {
        assert!(
            Instant::now() < deadline,
            "expected log line did not appear"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_reload(server: &TestServer) -> (i32, String, String) {
    let out = server.cli(&["reload"], None);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn sighup_and_reload_change_the_level_without_restart() {
    let server = TestServer::start();
    let pid_file = server.dir.path().join("mairust.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        server.pid().to_string()
    );
    // At info, a session's start (debug) is not logged.
    send_one(&server, "before-reload@remote.test").await;
    assert!(!server.log_contains("\"session_start\""));

    let original = std::fs::read_to_string(&server.config_path).unwrap();
    let debug = original.replace("  level: info\n", "  level: debug\n");
    assert_ne!(debug, original);
    // Also a change that needs a restart: reported, not applied.
    let debug = debug.replace("  interval_seconds: 0.2\n", "  interval_seconds: 0.3\n");
    std::fs::write(&server.config_path, &debug).unwrap();
    let (code, out, err) = run_reload(&server);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration reloaded"), "{out}");
    assert!(out.contains("applied: logging.level"), "{out}");
    assert!(out.contains("needing a restart: health"), "{out}");
    send_one(&server, "after-reload@remote.test").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log_contains("\"session_start\"") {
        assert!(Instant::now() < deadline, "debug lines did not appear");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file: `mairust reload` refuses before signalling (exit 2, the key named);
    // a plain SIGHUP makes the server refuse it and keep running as it was.
    let broken = debug.replace("  level: debug\n", "  level: loud\n");
    std::fs::write(&server.config_path, &broken).unwrap();
    let (code, out, err) = run_reload(&server);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("logging.level"), "{err}");
    let from = server.log_lines().len();
    server.signal(libc::SIGHUP);
    wait_log(&server, from, |l| l["event"] == "reload_failed").await;
    std::fs::write(&server.config_path, &original).unwrap();
    let from = server.log_lines().len();
    server.signal(libc::SIGHUP);
    wait_log(&server, from, |l| {
        l["event"] == "reloaded" && l["changed"].as_str() == Some("[\"logging.level\"]")
    })
    .await;
    let seen_debug = server.log_lines().len();
    send_one(&server, "back-to-info@remote.test").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later: Vec<Value> = server.log_lines().split_off(seen_debug);
    assert!(
        later.iter().all(|l| l["event"] != "session_start"),
        "still at debug"
    );

    // Every reload is audited, the refused one as a failure.
    let key = server.admin_key();
    let body = server
        .get_json(&key, "/api/v1/audit?event=config.reload")
        .await;
    let outcomes: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "failure", "success"], "{body}");
    assert!(server.log_contains("\"event\":\"ready\""));
}

#[tokio::test]
async fn reload_without_a_pid_file_or_server_says_so() {
    let server = TestServer::start();
    let no_pid = std::fs::read_to_string(&server.config_path)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("pid_file"))
        .collect::<Vec<_>>()
        .join("\n");
    let path = server.dir.path().join("no-pid.yaml");
    std::fs::write(&path, no_pid).unwrap();
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "reload"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.pid_file"));
    let mut server = server;
    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(20));
    assert!(
        !server.dir.path().join("mairust.pid").exists(),
        "pid file removed at exit"
    );
    let (code, _, err) = run_reload(&server);
    assert_eq!(code, 1);
    assert!(err.contains("mairust.pid"), "{err}");
}

#[test]
fn log_file_rotates_by_size_and_gzips() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = common::free_port();
    let storage = format!(
        "storage:\n  backend: fs\n  fs:\n    path: {}/objects\n",
        dir.path().display()
    );
    let yaml = common::config_yaml(
        dir.path(),
        &format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()),
        &storage,
        &Options::default(),
    )
    .replace(
        "http:\n  address: 127.0.0.1:0\n",
        &format!("http:\n  address: 127.0.0.1:{http_port}\n"),
    )
    .replace(
        "  format: json\n",
        &format!(
            "  format: json\n  file: {}/log/mairust.log\n  rotation:\n    max_size_mb: 0.01\n    max_files: 2\n    compress: true\n",
            dir.path().display()
        ),
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let log = dir.path().join("log/mairust.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"event\":\"ready\"")) {
        assert!(Instant::now() < deadline, "server not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ~250 bytes per access line: 400 requests are about ten 10 KB files.
    let client = reqwest::blocking::Client::new();
    for _ in 0..400 {
        let r = client
            .get(format!("http://127.0.0.1:{http_port}/health"))
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["mairust.log", "mairust.log.1.gz", "mairust.log.2.gz"],
        "max_files 2, rotated files gzipped"
    );
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.is_empty(), "logs went to the file, not stdout");
    for rotated in ["mairust.log.1.gz", "mairust.log.2.gz"] {
        let file = std::fs::File::open(dir.path().join("log").join(rotated)).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.len() >= 10 * 1024, "{rotated}: {} bytes", text.len());
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("whole JSON lines");
            assert!(v["component"].is_string());
        }
    }
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect()
}

fn names(spans: &[&Span]) -> Vec<String> {
    let mut n: Vec<String> = spans.iter().map(|s| s.name.clone()).collect();
    n.sort();
    n
}

/// A transaction's trace: its own root, with the recipient lookup, the pre_receive hook
/// call and the store under it, and the body write and commit under the store.
fn assert_whole_transaction(spans: &[Span], txn: &Span) {
    assert_eq!(txn.parent_span_id, "", "a trace of its own");
    let under_txn = children(spans, txn);
    assert_eq!(
        names(&under_txn),
        ["db.lookup_recipient", "hook.call", "storage.store"],
        "{spans:#?}"
    );
    let store = under_txn
        .iter()
        .find(|s| s.name == "storage.store")
        .unwrap();
    assert_eq!(
        names(&children(spans, store)),
        ["db.commit", "storage.put_body"]
    );
}

fn tracing_options(collector: &OtlpReceiver, rate: f64, hook_url: &str) -> Options {
    Options {
        extra_yaml: format!(
            "telemetry:\n  tracing:\n    enabled: true\n    exporter: otlp\n    endpoint: {}\n    sample_rate: {rate}\n{ALLOW_LOOPBACK}hooks:\n  - id: scan\n    event: pre_receive\n    url: {hook_url}\n    secret: a-secret-of-enough-length\n",
            collector.endpoint()
        ),
        ..Options::default()
    }
}

/// One SMTP transaction and one API request (with `traceparent` when given), then a
/// graceful stop, which exports what is buffered.
async fn traffic_then_stop(server: &mut TestServer, message_id: &str, traceparent: Option<&str>) {
    send_one(server, message_id).await;
    let key = server.admin_key();
    let mut request = reqwest::Client::new()
        .get(format!("http://{}/api/v1/messages?limit=5", server.http))
        .bearer_auth(&key);
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(30)).success());
}

#[tokio::test]
async fn otlp_span_trees_of_a_transaction_and_a_request() {
    let collector = OtlpReceiver::start();
    let hook = HookReceiver::start("a-secret-of-enough-length");
    let mut server = TestServer::start_with(tracing_options(&collector, 1.0, &hook.url()));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    traffic_then_stop(&mut server, "traced@remote.test", Some(&traceparent)).await;
    let spans = collector.spans();

    let txn = spans
        .iter()
        .find(|s| s.name == "smtp.transaction")
        .unwrap_or_else(|| panic!("no SMTP transaction span in {spans:#?}"));
    assert_eq!(txn.attribute("listener"), Some("inbound"));
    assert_eq!(txn.attribute("smtp.reply_code"), Some("250"));
    assert_whole_transaction(&spans, txn);

    let request = spans
        .iter()
        .find(|s| s.trace_id == trace_id && s.parent_span_id == parent_id)
        .unwrap_or_else(|| panic!("traceparent not followed: {spans:#?}"));
    assert_eq!(request.name, "GET /api/v1/messages");
    assert_eq!(request.attribute("http.status_code"), Some("200"));
    assert_eq!(
        names(&children(&spans, request)),
        ["db.list_messages", "db.verify_api_key"]
    );
}

#[tokio::test]
async fn sample_rate_zero_exports_nothing() {
    let collector = OtlpReceiver::start();
    let hook = HookReceiver::start("a-secret-of-enough-length");
    let mut server = TestServer::start_with(tracing_options(&collector, 0.0, &hook.url()));
    traffic_then_stop(&mut server, "untraced@remote.test", None).await;
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
}

#[tokio::test]
async fn partial_sampling_exports_whole_transactions_only() {
    let collector = OtlpReceiver::start();
    let hook = HookReceiver::start("a-secret-of-enough-length");
    let mut server = TestServer::start_with(tracing_options(&collector, 0.5, &hook.url()));
    let sent = 24;
    for n in 0..sent {
        send_one(&server, &format!("sampled-{n}@remote.test")).await;
    }
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    let spans = collector.spans();

    let txns: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "smtp.transaction")
        .collect();
    // Each transaction is kept with probability 1/2: all or none of 24 is 2^-23.
    assert!(
        (1..sent).contains(&txns.len()),
        "{} of {sent} transactions exported",
        txns.len()
    );
    for txn in &txns {
        assert_whole_transaction(&spans, txn);
    }
    // Nothing of an unsampled transaction leaks out as a trace of its own.
    assert_eq!(spans.len(), txns.len() * 6, "{spans:#?}");
}
