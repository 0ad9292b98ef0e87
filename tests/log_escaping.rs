//! Client-controlled values cannot forge log lines or reach a terminal raw (issue 12):
//! an SMTP client sends an AUTH user name with CR LF, a fake log line and an ESC
//! sequence, and a message whose Message-ID carries ESC, DEL, C1 and backspace (what
//! can get through SMTP lines). Every line of the text log, of the JSON log and of
//! `mairust logs` (plain and `--json`) is free of raw control characters, and no line
//! starts with the forged prefix.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::raw::RawClient;
use common::{BIN, Options, TestServer, eventually};

/// The forged line's start.
const FORGED: &str = "2026-01-01T00:00:00Z";
/// The AUTH user name: a line break, a fake log line, a colour escape.
const USER: &str = "x\r\n2026-01-01T00:00:00Z  INFO forged line\x1b[31m";
/// The Message-ID's local part: ESC, DEL, C1 CSI (U+009B) and backspace.
const MESSAGE_ID: &str = "id\x1b[2J\x7f\u{9b}31m\x08@remote.test";

/// Sends the hostile AUTH (refused) on `submission` and the hostile message on
/// `inbound`.
async fn hostile_client(submission: SocketAddr, inbound: SocketAddr) {
    let (mut c, _) = RawClient::connect(submission).await;
    c.expect("EHLO client.test", 250).await;
    let plain = common::base64(&format!("\0{USER}\0wrong password"));
    c.expect(&format!("AUTH PLAIN {plain}"), 535).await;
    c.expect("QUIT", 221).await;

    let (mut c, _) = RawClient::connect(inbound).await;
    c.begin_data(&TestServer::address("bob")).await;
    let message = format!(
        "From: <s@remote.test>\r\nSubject: escapes\r\nMessage-ID: <{MESSAGE_ID}>\r\n\r\nhi\r\n.\r\n"
    );
    c.send(message.as_bytes()).await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    c.expect("QUIT", 221).await;
}

/// Asserts that no line of `text` holds a control character or starts with the
/// forged prefix.
fn assert_clean(what: &str, text: &str) {
    for line in text.lines() {
        assert!(
            !line.contains(char::is_control),
            "{what}: raw control character in {line:?}"
        );
        // The server lowercases user names: the forged line would be lowercase too.
        assert!(
            !line
                .trim_start()
                .to_ascii_lowercase()
                .starts_with(&FORGED.to_ascii_lowercase()),
            "{what}: forged line {line:?}"
        );
    }
}

fn log_text(dir: &Path) -> String {
    let bytes = std::fs::read(dir.join("log/mairust.log")).unwrap_or_default();
    String::from_utf8(bytes).expect("the log is UTF-8")
}

#[tokio::test]
async fn json_logs_and_mairust_logs_escape_client_values() {
    let server = TestServer::start_with(Options {
        allow_plaintext_auth: true,
        log_file: true,
        ..Options::default()
    });
    hostile_client(server.submission, server.inbound).await;
    let logged = |event: &'static str| {
        let server = &server;
        async move {
            eventually(Duration::from_secs(10), || async {
                server.log_lines().iter().any(|l| l["event"] == event)
            })
            .await
        }
    };
    assert!(logged("auth_failure").await && logged("message_stored").await);

    let file = log_text(server.dir.path());
    assert_clean("JSON log", &file);
    // Escaped, not lost: the values read back exactly.
    let lines = server.log_lines();
    let auth = lines.iter().find(|l| l["event"] == "auth_failure").unwrap();
    assert_eq!(auth["user"], USER.to_lowercase());
    let stored = lines
        .iter()
        .find(|l| l["event"] == "message_stored")
        .unwrap();
    let message_id = stored["message_id"].as_str().unwrap();
    assert!(
        message_id.contains(['\x1b', '\x7f', '\u{9b}', '\x08']),
        "the Message-ID reached the log with its control characters: {message_id:?}"
    );
    assert!(
        file.contains(r"\u007f") && file.contains(r"\u009b"),
        "DEL and C1 escaped"
    );

    let plain = server.cli_ok(&["logs", "--tail", "1000"], None);
    assert_clean("mairust logs", &plain);
    assert!(
        plain.contains(r"user=x\r\n2026-01-01t00:00:00z  info forged line\u{1b}[31m"),
        "{plain}"
    );
    assert!(
        plain.contains(r"\u{1b}[2J\u{7f}\u{9b}31m\u{8}@remote.test"),
        "{plain}"
    );
    let json = server.cli_ok(&["logs", "--json", "--tail", "1000"], None);
    assert_clean("mairust logs --json", &json);
    let auth: serde_json::Value = json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["event"] == "auth_failure")
        .expect("auth_failure in mairust logs --json");
    assert_eq!(auth["user"], USER.to_lowercase());
}

/// Kills the server process it holds when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn text_logs_escape_client_values() {
    // The harness learns its ports from JSON log lines: this server gets fixed ones.
    let server = TestServer::prepare(Options {
        allow_plaintext_auth: true,
        log_file: true,
        ..Options::default()
    });
    server.cli_ok(&["domain", "add", common::DOMAIN], None);
    server.cli_ok(
        &[
            "user",
            "add",
            &TestServer::address("bob"),
            "--password-stdin",
        ],
        Some(common::PASSWORD),
    );
    let ports: Vec<u16> = (0..4).map(|_| common::free_port()).collect();
    let mut config = std::fs::read_to_string(&server.config_path).unwrap();
    // In order: inbound, submission, submissions, http.
    for port in &ports {
        config = config.replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1);
    }
    assert!(!config.contains("127.0.0.1:0"), "{config}");
    let config = config.replace("format: json", "format: text");
    std::fs::write(&server.config_path, config).unwrap();
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (inbound, submission, http) = (at(ports[0]), at(ports[1]), at(ports[3]));

    let _running = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&server.config_path)
            .arg("serve")
            .current_dir(server.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = eventually(Duration::from_secs(30), || async {
        reqwest::get(format!("http://{http}/health/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(
        ready,
        "server not ready; log:\n{}",
        log_text(server.dir.path())
    );

    hostile_client(submission, inbound).await;
    let logged = eventually(Duration::from_secs(10), || async {
        let text = log_text(server.dir.path());
        text.contains("auth_failure") && text.contains("message_stored")
    })
    .await;
    let text = log_text(server.dir.path());
    assert!(logged, "{text}");
    assert_clean("text log", &text);
    assert!(
        text.contains(r"user=x\r\n2026-01-01t00:00:00z  info forged line\u{1b}[31m"),
        "the user name, escaped: {text}"
    );
    assert!(
        text.contains(r"\u{1b}[2J\u{7f}\u{9b}31m\u{8}@remote.test"),
        "the Message-ID, escaped: {text}"
    );
}
