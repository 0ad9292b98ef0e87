//! The diagnostic CLI (SPEC O9, O13) against a live server and against a stopped one:
//! `health check`, `status`, `check db|storage|smtp`, `logs`; output and exit codes.

mod common;

use std::time::Duration;

use common::{Options, TestServer, free_port};

/// (exit code, stdout, stderr)
fn run(server: &TestServer, args: &[&str]) -> (Option<i32>, String, String) {
    let out = server.cli(args, None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn diagnostics_against_a_live_and_a_stopped_server() {
    // Fixed ports: the CLI finds the server through the configuration.
    let mut server = TestServer::prepare(Options {
        log_file: true,
        ..Options::default()
    });
    let (http, smtp) = (free_port(), free_port());
    let yaml = std::fs::read_to_string(&server.config_path)
        .unwrap()
        .replace(
            "http:\n  address: 127.0.0.1:0",
            &format!("http:\n  address: 127.0.0.1:{http}"),
        )
        .replace(
            "    inbound:\n      address: 127.0.0.1:0",
            &format!("    inbound:\n      address: 127.0.0.1:{smtp}"),
        );
    std::fs::write(&server.config_path, yaml).unwrap();
    server.spawn();
    assert_eq!(server.http.port(), http);

    let (code, out, err) = run(&server, &["health", "check"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("healthy"), "{out}");
    assert!(out.contains("database: healthy"), "{out}");
    let (code, out, _) = run(&server, &["health", "check", "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "healthy");

    let (code, out, err) = run(&server, &["status"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for needle in [
        "MaiRust 0.1.0 on node mx.example.test-",
        ": healthy",
        &format!("inbound 127.0.0.1:{smtp}"),
        &format!("http 127.0.0.1:{http}"),
        "database    healthy",
        "storage     healthy",
        "queue       0 entries",
        "stored      0 bytes (no limit)",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let (code, out, _) = run(&server, &["status", "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["health"]["checks"]["queue"]["length"], 0);

    for (target, needle) in [
        ("db", "database: OK"),
        ("storage", "storage: OK"),
        ("smtp", "smtp: OK"),
    ] {
        let (code, out, err) = run(&server, &["check", target]);
        assert_eq!(code, Some(0), "{target}: {out}{err}");
        assert!(out.contains(needle), "{out}");
    }
    let (_, out, _) = run(&server, &["check", "smtp"]);
    assert!(out.contains("ESMTP MaiRust"), "{out}");
    assert!(out.contains("PIPELINING"), "{out}");
    let (code, out, _) = run(&server, &["check", "smtp", "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    let (code, out, _) = run(&server, &["check", "smtp", "--listener", "nonsense"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("no listener `nonsense`"), "{out}");

    let (code, out, err) = run(&server, &["logs", "--tail", "3"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let (_, out, _) = run(
        &server,
        &["logs", "--component", "supervisor", "--tail", "100"],
    );
    assert!(out.contains("MaiRust is ready"), "{out}");
    assert!(
        out.lines().all(|l| l.contains(" supervisor ")),
        "filtered by component: {out}"
    );
    let (_, out, _) = run(
        &server,
        &["logs", "--json", "--tail", "5", "--level", "info"],
    );
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert!(["info", "warn", "error"].contains(&v["level"].as_str().unwrap()));
    }
    // --follow prints what is written after it started.
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_mairust"))
        .args(["--config", server.config_path.to_str().unwrap()])
        .args(["logs", "--follow", "--tail", "0", "--component", "api"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // It prints nothing written before it started (`--tail 0`), and when it has
    // started cannot be seen from here: request again until a request shows up.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        reqwest::get(format!("http://127.0.0.1:{http}/health/live"))
            .await
            .unwrap();
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => break line,
            Err(_) if std::time::Instant::now() < deadline => continue,
            Err(e) => panic!("--follow printed no request in 20 s: {e}"),
        }
    };
    assert!(line.contains("route=/health/live"), "{line}");
    follower.kill().unwrap();
    follower.wait().unwrap();

    let (code, _, err) = run(&server, &["logs", "--level", "loud"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--level"), "{err}");

    // Stopped.
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    let (code, out, err) = run(&server, &["health", "check"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no server answers"), "{err}");
    let (code, out, _) = run(&server, &["status"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("MaiRust is not running"), "{out}");
    let (code, out, _) = run(&server, &["status", "--json"]);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["running"], false);
    let (code, out, _) = run(&server, &["check", "smtp"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("smtp: FAILED"), "{out}");
    assert!(out.contains(&format!("127.0.0.1:{smtp}")), "{out}");
    // The database and the store do not need the server.
    for target in ["db", "storage"] {
        let (code, out, _) = run(&server, &["check", target]);
        assert_eq!(code, Some(0), "{out}");
    }
    let (code, out, _) = run(
        &server,
        &["logs", "--component", "supervisor", "--tail", "1"],
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("MaiRust stopped"), "{out}");
}

#[test]
fn logs_and_checks_explain_what_is_missing() {
    let server = TestServer::prepare(Options::default());
    let (code, _, err) = run(&server, &["logs"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("logging.file is not set"), "{err}");
    // Port 0 in the configuration: the CLI cannot know where the server listens.
    let (code, _, err) = run(&server, &["health", "check"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("http.address has port 0"), "{err}");
    let (code, out, _) = run(&server, &["check", "smtp"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("port 0"), "{out}");
}
