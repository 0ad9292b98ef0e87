//! The CLI: configuration errors name the key, account commands validate their input,
//! and `serve` refuses a schema it does not know.

mod common;

use std::process::Command;

use common::{BIN, TestServer};
use sea_orm::ConnectionTrait;

fn run_with_config(yaml: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap()
}

const BASE: &str = "database:\n  url: sqlite://./db.sqlite?mode=rwc\nstorage:\n  backend: fs\n  fs:\n    path: ./objects\n";

#[test]
fn config_errors_name_the_key_and_exit_2() {
    for (yaml, needle) in [
        (format!("{BASE}smtp:\n  limits:\n    max_mesage_size: 10\n"), "max_mesage_size"),
        (format!("{BASE}smtp:\n  limits:\n    max_recipients: -1\n"), "smtp.limits.max_recipients"),
        (format!("{BASE}http:\n  address: not-an-address\n"), "http.address"),
        (format!("{BASE}logging:\n  format: xml\n"), "logging.format"),
        (format!("{BASE}audit:\n  retention_days: 0\n"), "audit.retention_days"),
        (format!("{BASE}api:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n"), "api.trusted_proxies[1]"),
        (format!("{BASE}api:\n  forwarded_header: x-real-ip\n"), "forwarded_header"),
        (format!("{BASE}retention:\n  deleted_messages_days: 40000\n"), "retention.deleted_messages_days"),
        (format!("{BASE}retention:\n  purge_interval_seconds: 0\n"), "retention.purge_interval_seconds"),
        (format!("{BASE}retention:\n  purge_batch_size: 0\n"), "retention.purge_batch_size"),
        (format!("{BASE}retention:\n  deleted_days: 3\n"), "deleted_days"),
        ("database:\n  url: env:MAIRUST_SURELY_UNSET\nstorage:\n  backend: fs\n  fs:\n    path: o\n".to_string(), "MAIRUST_SURELY_UNSET"),
        ("storage: [unclosed\n".to_string(), "YAML"),
    ] {
        let out = run_with_config(&yaml, &["config-check"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains(needle), "{yaml}: error does not name {needle}: {err}");
    }
    let out = run_with_config(BASE, &["config-check"]);
    assert!(out.status.success());
    // 0 days: deleted messages are kept for ever, which is a valid choice.
    let out = run_with_config(
        &format!("{BASE}retention:\n  deleted_messages_days: 0\n"),
        &["config-check"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_config_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve"])
        .current_dir(dir.path())
        .env_remove("MAIRUST_CONFIG")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no configuration file found"));
}

#[test]
fn account_commands_validate_input() {
    let yaml = BASE;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(args)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The command exits 1 and its error names the problem.
    let fails = |args: &[&str], stdin: &str, needle: &str| {
        let (code, _, err) = run(args, stdin);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    assert_eq!(run(&["domain", "add", "Example.TEST"], "").0, Some(0));
    fails(&["domain", "add", "example.test"], "", "already exists");
    fails(&["domain", "add", "not a domain"], "", "not a valid domain");
    fails(
        &["user", "add", "bob@nowhere.test", "--password-stdin"],
        "pw\n",
        "mairust domain add nowhere.test",
    );
    fails(
        &["user", "add", "bob@example.test"],
        "pw\n",
        "--password-stdin",
    );
    fails(
        &["user", "add", "bob@example.test", "--password-stdin"],
        "\n",
        "empty password",
    );
    assert_eq!(
        run(
            &["user", "add", "Bob@Example.test", "--password-stdin"],
            "pw\n"
        )
        .0,
        Some(0)
    );
    fails(
        &["user", "add", "bob@example.test", "--password-stdin"],
        "pw\n",
        "already exists",
    );
    let (_, out, _) = run(&["user", "list"], "");
    assert_eq!(out.trim(), "bob@example.test");
    // Password change and disable/enable.
    fails(
        &["user", "passwd", "bob@example.test"],
        "new\n",
        "--password-stdin",
    );
    fails(
        &["user", "passwd", "bob@example.test", "--password-stdin"],
        "\n",
        "empty password",
    );
    fails(
        &["user", "passwd", "eve@example.test", "--password-stdin"],
        "new\n",
        "does not exist",
    );
    let (code, out, _) = run(
        &["user", "passwd", "bob@example.test", "--password-stdin"],
        "new\n",
    );
    assert_eq!(
        (code, out.trim()),
        (Some(0), "password of bob@example.test changed")
    );
    assert_eq!(run(&["user", "disable", "bob@example.test"], "").0, Some(0));
    let (_, out, _) = run(&["user", "list"], "");
    assert_eq!(out.trim(), "bob@example.test (disabled)");
    assert_eq!(run(&["user", "enable", "Bob@example.test"], "").0, Some(0));
    let (_, out, _) = run(&["user", "list"], "");
    assert_eq!(out.trim(), "bob@example.test");
    fails(
        &["user", "disable", "not-an-address"],
        "",
        "not a valid address",
    );
    let (_, out, _) = run(&["domain", "list"], "");
    assert_eq!(out.trim(), "example.test");
    assert_eq!(run(&["user", "remove", "bob@example.test"], "").0, Some(0));
    fails(
        &["user", "remove", "bob@example.test"],
        "",
        "does not exist",
    );
    assert_eq!(run(&["domain", "remove", "example.test"], "").0, Some(0));
    let (_, out, _) = run(&["migrate", "status"], "");
    assert!(out.contains("applied"), "{out}");
}

#[tokio::test]
async fn serve_refuses_a_newer_schema() {
    let mut server = TestServer::start();
    server.kill();
    let db = server.db().await;
    db.execute_unprepared(
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m20991231_000001_from_the_future', 0)",
    )
    .await
    .unwrap();
    db.close().await.ok();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&server.config_path)
        .arg("serve")
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("newer than this version"), "{err}");
    assert!(err.contains("m20991231_000001_from_the_future"), "{err}");
    assert!(err.contains("mairust migrate rollback"), "{err}");
}

/// Shell completions load in bash and complete subcommands; manual pages render
/// with groff without a warning. Neither needs a configuration.
#[test]
fn completions_and_manual_pages() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output(&out));
    let script = dir.path().join("mairust.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let complete = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(mairust mig); COMP_CWORD=1; _mairust mairust mig mairust; echo \"${{COMPREPLY[@]}}\"; COMP_WORDS=(mairust dkim ''); COMP_CWORD=2; _mairust mairust '' dkim; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&complete.stdout);
    let mut lines = said.lines();
    assert_eq!(lines.next(), Some("migrate"), "{said}");
    let dkim = lines.next().unwrap_or("");
    for sub in ["generate", "list", "rotate", "remove"] {
        assert!(dkim.split(' ').any(|w| w == sub), "dkim {sub}: {said}");
    }
    for shell in ["zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
    }

    let man = dir.path().join("man1");
    std::fs::create_dir(&man).unwrap();
    let out = Command::new(BIN).arg("man").arg(&man).output().unwrap();
    assert!(out.status.success(), "{}", common::output(&out));
    for page in [
        "mairust.1",
        "mairust-serve.1",
        "mairust-migrate.1",
        "mairust-dkim-generate.1",
    ] {
        let path = man.join(page);
        assert!(path.exists(), "{page} missing");
        let render = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(&path)
            .output()
            .expect("groff (Debian package groff-base)");
        let text = String::from_utf8_lossy(&render.stdout);
        assert!(render.status.success(), "{page}");
        assert!(
            render.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&render.stderr)
        );
        assert!(text.contains("mairust"), "{page}: {text}");
    }
    let top = String::from_utf8_lossy(
        &Command::new("groff")
            .args(["-man", "-Tutf8"])
            .arg(man.join("mairust.1"))
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        top.contains("config-check") && top.contains("completions"),
        "{top}"
    );
    // A directory that is not there: a clear error and exit 1.
    let out = Command::new(BIN)
        .arg("man")
        .arg(dir.path().join("absent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(common::output(&out).contains("cannot write the manual pages"));
}
