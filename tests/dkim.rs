//! DKIM signing of submitted mail (RFC 6376, RFC 8463), proven against dkimpy, an
//! implementation we share no code with: keys made by `mairust dkim generate` (RSA and
//! Ed25519) sign what users submit over SMTP and `POST /send`; the mail a remote server
//! receives verifies against the TXT records the command printed. Listing, rotation and
//! removal through the CLI and the API, with no private key in any output, the server's
//! log file or the audit file; the DNS listing; a key that cannot be opened gets a
//! temporary refusal, never unsigned mail, and an API answer that keeps the reason (it
//! names server paths) for the log.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::api::cli_key;
use common::raw::RawClient;
use common::sink::Sink;
use common::{DOMAIN, Options, PASSWORD, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/dkim_verify.py");

fn server(sink: &Sink) -> TestServer {
    TestServer::start_with(Options {
        allow_plaintext_auth: true,
        extra_yaml: format!(
            "queue:\n  poll_interval_seconds: 0.2\n{}",
            sink.route_yaml(&["remote.test"])
        ),
        ..Options::default()
    })
}

/// The TXT record lines (`name. 3600 IN TXT "..." "..."`) in `text`, as name → text.
fn txt_records(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| l.contains(" IN TXT "))
        .map(|l| {
            let name = l.split_whitespace().next().unwrap().trim_end_matches('.');
            let value: String = l.split('"').skip(1).step_by(2).collect();
            (name.to_string(), value)
        })
        .collect()
}

/// One signature as dkimpy saw it.
#[derive(Debug, PartialEq)]
struct Verdict {
    d: String,
    s: String,
    a: String,
    ok: bool,
}

/// Every signature of `message` checked by dkimpy against `records`; `None` when
/// dkimpy is missing outside CI (`.ci/run` installs it).
fn dkimpy(message: &[u8], records: &HashMap<String, String>, dir: &Path) -> Option<Vec<Verdict>> {
    let file = dir.join(format!("message-{}.eml", fastrand_suffix()));
    std::fs::write(&file, message).unwrap();
    let zone = dir.join(format!("zone-{}.json", fastrand_suffix()));
    std::fs::write(&zone, serde_json::to_vec(records).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(VERIFIER)
        .arg(&file)
        .arg(&zone)
        .output()
        .expect("python3");
    if out.status.code() == Some(3) {
        assert!(
            std::env::var("CI").is_err(),
            "dkimpy is needed in CI (pip install dkimpy pynacl)"
        );
        eprintln!("dkimpy not installed: signatures not verified (pip install dkimpy pynacl)");
        return None;
    }
    assert!(
        out.status.success(),
        "dkim_verify.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        results
            .iter()
            .map(|r| Verdict {
                d: r["d"].as_str().unwrap().into(),
                s: r["s"].as_str().unwrap().into(),
                a: r["a"].as_str().unwrap().into(),
                ok: r["ok"].as_bool().unwrap(),
            })
            .collect(),
    )
}

/// No PEM block and no base64 PKCS#8 private key (RSA `MIIEv`/`MIIEp`, Ed25519
/// `MC4CAQ`/`MFMCAQ`) in `text`.
fn assert_no_private_key(text: &str) {
    for needle in ["PRIVATE", "MIIEv", "MIIEp", "MC4CAQ", "MFMCAQ"] {
        assert!(!text.contains(needle), "{needle} in {text}");
    }
}

/// `mairust ARGS` that succeeds; its standard output. Nothing it prints, on either
/// stream, holds a private key.
fn cli_ok(server: &TestServer, args: &[&str]) -> String {
    let out = server.cli(args, None);
    let said = common::output(&out);
    assert!(out.status.success(), "mairust {args:?} failed: {said}");
    assert_no_private_key(&said);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mairust dkim list --domain example.test`: each selector's state and whole line.
fn listed(server: &TestServer) -> HashMap<String, (String, String)> {
    cli_ok(server, &["dkim", "list", "--domain", DOMAIN])
        .lines()
        .map(|line| {
            // DOMAIN SELECTOR ALGORITHM STATE signs_from=... signs_until=... publish_until=...
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words[0], DOMAIN, "{line}");
            (
                words[1].to_string(),
                (words[3].to_string(), line.to_string()),
            )
        })
        .collect()
}

fn fastrand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A plaintext session on the submission port, logged in as bob.
async fn bob(server: &TestServer) -> RawClient {
    use base64::Engine;
    let (mut c, _) = RawClient::connect(server.submission).await;
    c.expect("EHLO client.test", 250).await;
    let plain = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{}\0{PASSWORD}", TestServer::address("bob")));
    c.expect(&format!("AUTH PLAIN {plain}"), 235).await;
    c
}

/// Bob sends `subject` to friend@remote.test; the reply to the final dot.
async fn submit(c: &mut RawClient, subject: &str) -> (u16, String) {
    let bob = TestServer::address("bob");
    c.expect(&format!("MAIL FROM:<{bob}>"), 250).await;
    c.expect("RCPT TO:<friend@remote.test>", 250).await;
    c.expect("DATA", 354).await;
    let data = format!(
        "From: Bob <{bob}>\r\nTo: <friend@remote.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,  \r\nthis  line has  odd spacing\t \r\n\r\n\r\n.\r\n"
    );
    c.send(data.as_bytes()).await;
    let r = c.reply().await.expect("reply to the data");
    (r.code, r.text)
}

#[tokio::test]
async fn submitted_mail_is_signed_with_both_algorithms_and_dkimpy_verifies_it() {
    let sink = Sink::start();
    let server = server(&sink);

    // Keys from the CLI: each prints the record to publish, and never a private key.
    let rsa = server.cli_ok(
        &[
            "dkim",
            "generate",
            DOMAIN,
            "--selector",
            "rsa1",
            "--algorithm",
            "rsa",
        ],
        None,
    );
    let ed = server.cli_ok(
        &[
            "dkim",
            "generate",
            DOMAIN,
            "--selector",
            "ed1",
            "--algorithm",
            "ed25519",
        ],
        None,
    );
    let mut records = txt_records(&rsa);
    records.extend(txt_records(&ed));
    assert!(records["rsa1._domainkey.example.test"].starts_with("v=DKIM1; k=rsa; p=MIIB"));
    assert!(records["ed1._domainkey.example.test"].starts_with("v=DKIM1; k=ed25519; p="));
    for out in [&rsa, &ed] {
        assert_no_private_key(out);
    }
    let master = server.dir.path().join("data/dkim-master.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&master).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the master key file is the owner's only"
        );
    }
    // A second RSA key beside the first is refused (that is a rotation), naming it.
    let taken = server.cli(&["dkim", "generate", DOMAIN, "--selector", "rsa2"], None);
    assert!(!taken.status.success());
    let said = String::from_utf8_lossy(&taken.stderr);
    assert!(said.contains("rsa1") && said.contains("rotate"), "{said}");
    // `domain dns` lists what the domain needs, the keys' records the same as printed.
    let dns = server.cli_ok(&["domain", "dns", DOMAIN], None);
    assert!(dns.contains("example.test. 3600 IN MX 10 "), "{dns}");
    assert!(dns.contains("\"v=spf1 mx -all\""), "{dns}");
    assert!(
        dns.contains("_dmarc.example.test. 3600 IN TXT \"v=DMARC1;"),
        "{dns}"
    );
    let listed = txt_records(&dns);
    for (name, value) in &records {
        assert_eq!(listed.get(name), Some(value), "{name} in `domain dns`");
    }

    // SMTP AUTH submission: signed by both keys; dkimpy verifies both.
    let mut c = bob(&server).await;
    let (code, text) = submit(&mut c, "over-smtp").await;
    assert_eq!(code, 250, "{text}");
    let m = sink.with_subject("over-smtp");
    let head = String::from_utf8_lossy(&m.data);
    assert!(head.starts_with("DKIM-Signature: "), "{head}");
    let dir = server.dir.path();
    if let Some(verdicts) = dkimpy(&m.data, &records, dir) {
        let mut got: Vec<(String, String, bool)> = verdicts
            .iter()
            .map(|v| (v.s.clone(), v.a.clone(), v.ok))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("ed1".into(), "ed25519-sha256".into(), true),
                ("rsa1".into(), "rsa-sha256".into(), true),
            ]
        );
        assert!(verdicts.iter().all(|v| v.d == DOMAIN));
        // The check can fail: one changed byte of the body, or a From: added on top
        // (From is signed once more than it occurs), and neither verifies.
        let text = String::from_utf8_lossy(&m.data).into_owned();
        let altered = text.replace("odd spacing", "odd spacinG");
        let verdicts = dkimpy(altered.as_bytes(), &records, dir).unwrap();
        assert_eq!(verdicts.len(), 2, "{verdicts:?}");
        assert!(verdicts.iter().all(|v| !v.ok), "{verdicts:?}");
        // Another signed field added on top (every listed field is signed once more
        // than it occurs): a second Subject: breaks it as well.
        for added in ["From: ceo@bank.test", "Subject: urgent"] {
            let forged = format!("{added}\r\n{text}");
            let verdicts = dkimpy(forged.as_bytes(), &records, dir).unwrap();
            assert_eq!(verdicts.len(), 2, "{verdicts:?}");
            assert!(verdicts.iter().all(|v| !v.ok), "{added}: {verdicts:?}");
        }
    }

    // POST /send: the same pipeline, the same signatures.
    let key = cli_key(&server, &["send"]);
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/send", server.http))
        .bearer_auth(&key)
        .json(&json!({"from": TestServer::address("bob"), "to": ["friend@remote.test"], "subject": "over-api", "text": "hello from the API"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let m = sink.with_subject("over-api");
    if let Some(verdicts) = dkimpy(&m.data, &records, dir) {
        assert_eq!(verdicts.len(), 2, "{verdicts:?}");
        assert!(verdicts.iter().all(|v| v.ok), "{verdicts:?}");
    }

    // Mail from other servers (port 25, no AUTH) is not ours to sign, even when it
    // claims one of our domains.
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<carol@example.test>", 250).await;
    c.expect(&format!("RCPT TO:<{}>", TestServer::address("bob")), 250)
        .await;
    c.expect("DATA", 354).await;
    c.send(b"From: <carol@example.test>\r\nSubject: claims-ours\r\nMessage-ID: <claims-ours@x>\r\n\r\nhi\r\n.\r\n")
        .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let stored = server.messages_with_id("claims-ours@x").await;
    let raw = server.object(&stored[0].object_key).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains("DKIM-Signature"),
        "mail from outside was signed"
    );

    let text = server.metrics_text().await;
    let signed = |a: &str| {
        common::sample(
            &text,
            &format!("mairust_dkim_signatures_total{{algorithm=\"{a}\",result=\"signed\"}}"),
        )
    };
    assert_eq!(signed("rsa-sha256"), 2.0);
    assert_eq!(signed("ed25519-sha256"), 2.0);
}

#[tokio::test]
async fn keys_rotate_and_go_through_the_api_and_a_key_that_does_not_open_defers_mail() {
    let sink = Sink::start();
    let mut server = server(&sink);
    let admin = cli_key(&server, &["admin", "read"]);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{}/api/v1/domains/{DOMAIN}{p}", server.http);
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, url(path)).bearer_auth(&admin);
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Nothing to rotate yet; a bad algorithm or selector is named.
    let (s, b) = call(reqwest::Method::POST, "/dkim/rotate", Some(json!({}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = call(
        reqwest::Method::POST,
        "/dkim",
        Some(json!({"algorithm": "dsa"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["details"][0]["field"], "algorithm", "{b}");
    let (s, b) = call(
        reqwest::Method::POST,
        "/dkim",
        Some(json!({"selector": "bad_one"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");

    let (s, first) = call(
        reqwest::Method::POST,
        "/dkim",
        Some(json!({"selector": "old"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["state"], "active");
    assert_eq!(first["algorithm"], "rsa-sha256");
    let mut fields: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "algorithm",
            "created_at",
            "dns_name",
            "dns_value",
            "domain",
            "publish_until",
            "selector",
            "signs_from",
            "signs_until",
            "state"
        ],
        "a key's view holds its public part only"
    );
    assert_no_private_key(&first.to_string());
    // A second RSA key is a rotation, not an addition.
    let (s, b) = call(
        reqwest::Method::POST,
        "/dkim",
        Some(json!({"selector": "again"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");

    // A rotation with a delay: the new key is pending, the old one still signs.
    let (s, r) = call(
        reqwest::Method::POST,
        "/dkim/rotate",
        Some(json!({"selector": "later", "delay_hours": 24, "grace_days": 3})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["new"]["state"], "pending");
    assert_eq!(r["retired"][0]["selector"], "old");
    assert_eq!(
        r["retired"][0]["state"], "active",
        "it signs until the switch: {r}"
    );
    // Rotating again at once replaces the pending key's successor role: both earlier
    // keys end now and stay listed for the grace period.
    let (s, r) = call(
        reqwest::Method::POST,
        "/dkim/rotate",
        Some(json!({"selector": "now", "delay_hours": 0, "grace_days": 3})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["new"]["state"], "active");
    let mut retired: Vec<&str> = r["retired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["selector"].as_str().unwrap())
        .collect();
    retired.sort();
    assert_eq!(retired, ["later", "old"]);

    let (s, list) = call(reqwest::Method::GET, "/dkim", None).await;
    assert_eq!(s, StatusCode::OK);
    let states: HashMap<String, String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["selector"].as_str().unwrap().into(),
                k["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(states["old"], "retired");
    assert_eq!(states["later"], "retired");
    assert_eq!(states["now"], "active");
    let (s, dns) = call(reqwest::Method::GET, "/dns", None).await;
    assert_eq!(s, StatusCode::OK);
    let records: HashMap<String, String> = dns["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["purpose"] == "dkim")
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(records.len(), 3, "retired keys stay published: {dns}");

    // Mail is signed with the new key only.
    let mut c = bob(&server).await;
    let (code, text) = submit(&mut c, "after-rotation").await;
    assert_eq!(code, 250, "{text}");
    let m = sink.with_subject("after-rotation");
    if let Some(verdicts) = dkimpy(&m.data, &records, server.dir.path()) {
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert_eq!(verdicts[0].s, "now");
        assert!(verdicts[0].ok);
    }

    // Removal: gone from the list, 404 the second time.
    let (s, _) = call(reqwest::Method::DELETE, "/dkim/old", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = call(reqwest::Method::DELETE, "/dkim/old", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");

    // The master key file gone (a node set up without it), found at the next start:
    // a temporary refusal, no unsigned mail; the file back, the same server signs the
    // next message.
    drop(c);
    server.stop();
    let master = server.dir.path().join("data/dkim-master.key");
    let aside = server.dir.path().join("dkim-master.key.aside");
    std::fs::rename(&master, &aside).unwrap();
    server.spawn();
    let mut c = bob(&server).await;
    let before = sink.count();
    let (code, text) = submit(&mut c, "no-master-key").await;
    assert_eq!(code, 451, "{text}");
    let logged = common::eventually(Duration::from_secs(5), || async {
        server.log_contains("message_not_signed")
    })
    .await;
    assert!(logged, "the refusal is logged");
    std::fs::rename(&aside, &master).unwrap();
    let (code, text) = submit(&mut c, "master-key-back").await;
    assert_eq!(code, 250, "{text}");
    let m = sink.with_subject("master-key-back");
    assert!(String::from_utf8_lossy(&m.data).starts_with("DKIM-Signature: "));
    assert_eq!(sink.count(), before + 1, "the refused message never left");
    let failed = common::sample(
        &server.metrics_text().await,
        "mairust_dkim_signatures_total{algorithm=\"rsa-sha256\",result=\"failed\"}",
    );
    assert!(failed >= 1.0);

    // Another node's master key (32 bytes, mode 0600, but not the one that sealed the
    // keys): the start says so, mail is refused for now, and the CLI refuses to seal
    // new keys with it instead of splitting the domain's keys between two master keys.
    drop(c);
    server.stop();
    std::fs::rename(&master, &aside).unwrap();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&master)
            .unwrap();
        f.write_all(&[0x5a; 32]).unwrap();
    }
    server.spawn();
    let logged = common::eventually(Duration::from_secs(5), || async {
        server.log_contains("dkim_master_key_unusable")
    })
    .await;
    assert!(logged, "the start reports a master key that opens nothing");
    let mut c = bob(&server).await;
    let (code, text) = submit(&mut c, "wrong-master-key").await;
    assert_eq!(code, 451, "{text}");
    let out = server.cli(
        &["dkim", "generate", DOMAIN, "--algorithm", "ed25519"],
        None,
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("does not open"), "{said}");
    // The API refuses the same, without the reason: it names this node's file. The
    // log has it.
    let resp = http
        .post(format!(
            "http://{}/api/v1/domains/{DOMAIN}/dkim",
            server.http
        ))
        .bearer_auth(&admin)
        .json(&json!({"algorithm": "ed25519"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"]["code"], "INTERNAL_ERROR", "{b}");
    let answered = b["error"]["message"].as_str().unwrap();
    let dir = server.dir.path().to_str().unwrap();
    assert!(
        !answered.contains("dkim-master.key") && !answered.contains(dir),
        "{answered}"
    );
    assert!(answered.contains("server log"), "{answered}");
    let logged = common::eventually(Duration::from_secs(5), || async {
        server.log_lines().iter().any(|l| {
            l["event"] == "dkim_key_error"
                && l["component"] == "api"
                && l.to_string().contains("dkim-master.key")
        })
    })
    .await;
    assert!(logged, "the reason is logged");
    std::fs::remove_file(&master).unwrap();
    // No file at all while keys exist: refused too, and no new file is made.
    let out = server.cli(
        &["dkim", "generate", DOMAIN, "--algorithm", "ed25519"],
        None,
    );
    assert!(!out.status.success());
    assert!(!master.exists(), "a master key was made beside sealed keys");
    std::fs::rename(&aside, &master).unwrap();
    let (code, text) = submit(&mut c, "right-master-key").await;
    assert_eq!(code, 250, "the right file is read again: {text}");
}

#[tokio::test]
async fn the_cli_lists_rotates_and_removes_keys_and_no_private_key_is_printed_or_logged() {
    let sink = Sink::start();
    let server = TestServer::start_with(Options {
        allow_plaintext_auth: true,
        // The server logs to its file (the harness tails it), read whole at the end.
        log_file: true,
        extra_yaml: format!(
            "queue:\n  poll_interval_seconds: 0.2\n{}",
            sink.route_yaml(&["remote.test"])
        ),
        ..Options::default()
    });
    // Every command goes through `cli_ok`: nothing it prints holds a private key.
    let out = cli_ok(&server, &["dkim", "list"]);
    assert_eq!(out.trim(), "no DKIM keys");
    let out = cli_ok(&server, &["dkim", "generate", DOMAIN, "--selector", "cli1"]);
    let mut records = txt_records(&out);
    let keys = listed(&server);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (state, line) = &keys["cli1"];
    assert_eq!(state, "active", "{line}");
    assert!(
        line.starts_with("example.test cli1 rsa-sha256 active signs_from="),
        "{line}"
    );
    assert!(line.ends_with(" signs_until=- publish_until=-"), "{line}");
    // Every domain's keys without --domain; an unknown domain is refused.
    let all = cli_ok(&server, &["dkim", "list"]);
    assert!(
        all.starts_with("example.test cli1 rsa-sha256 active "),
        "{all}"
    );
    let out = server.cli(&["dkim", "list", "--domain", "nowhere.test"], None);
    assert!(!out.status.success(), "{}", common::output(&out));

    // A rotation with a delay: the new key is pending (publish its record now), the old
    // one signs until the switch and stays listed for the grace period after it.
    let out = cli_ok(
        &server,
        &[
            "dkim",
            "rotate",
            DOMAIN,
            "--selector",
            "cli2",
            "--delay-hours",
            "24",
            "--grace-days",
            "3",
        ],
    );
    assert!(
        out.starts_with("added DKIM key cli2 (rsa-sha256) for example.test; it signs from "),
        "{out}"
    );
    assert!(out.contains("Publish this TXT record now:\n"), "{out}");
    assert!(out.contains("\nkey cli1 signs until "), "{out}");
    assert!(out.contains("; keep its record published until "), "{out}");
    records.extend(txt_records(&out));
    assert!(records["cli2._domainkey.example.test"].starts_with("v=DKIM1; k=rsa; p=MIIB"));
    let keys = listed(&server);
    assert_eq!(keys["cli1"].0, "active", "{keys:?}");
    assert!(!keys["cli1"].1.contains("signs_until=-"), "{keys:?}");
    assert!(!keys["cli1"].1.contains("publish_until=-"), "{keys:?}");
    assert_eq!(keys["cli2"].0, "pending", "{keys:?}");

    // Rotating again at once: the new key signs now; the pending one never will, and
    // both earlier keys are retired (still listed and published).
    let out = cli_ok(
        &server,
        &[
            "dkim",
            "rotate",
            DOMAIN,
            "--selector",
            "cli3",
            "--delay-hours",
            "0",
            "--grace-days",
            "3",
        ],
    );
    records.extend(txt_records(&out));
    let keys = listed(&server);
    let states: HashMap<&str, &str> = keys
        .iter()
        .map(|(selector, (state, _))| (selector.as_str(), state.as_str()))
        .collect();
    assert_eq!(
        states,
        HashMap::from([("cli1", "retired"), ("cli2", "retired"), ("cli3", "active")])
    );
    let dns = cli_ok(&server, &["domain", "dns", DOMAIN]);
    for selector in ["cli1", "cli2", "cli3"] {
        let name = format!("{selector}._domainkey.example.test. 3600 IN TXT ");
        assert!(dns.contains(&name), "{selector} published: {dns}");
    }

    // Mail is signed with the new key only.
    let mut c = bob(&server).await;
    let (code, text) = submit(&mut c, "after-cli-rotation").await;
    assert_eq!(code, 250, "{text}");
    let m = sink.with_subject("after-cli-rotation");
    let head = String::from_utf8_lossy(&m.data);
    assert_eq!(head.matches("DKIM-Signature: ").count(), 1, "{head}");
    assert!(head.contains("; s=cli3; d=example.test;"), "{head}");
    if let Some(verdicts) = dkimpy(&m.data, &records, server.dir.path()) {
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert_eq!(verdicts[0].s, "cli3");
        assert!(verdicts[0].ok, "{verdicts:?}");
    }

    // Removal is at once: gone from the list, from `domain dns` and from the API.
    let out = cli_ok(&server, &["dkim", "remove", DOMAIN, "cli2"]);
    assert_eq!(
        out.trim(),
        "removed DKIM key cli2 of example.test; its record cli2._domainkey.example.test can be withdrawn"
    );
    let keys = listed(&server);
    let mut selectors: Vec<&str> = keys.keys().map(|k| k.as_str()).collect();
    selectors.sort();
    assert_eq!(selectors, ["cli1", "cli3"]);
    let dns = cli_ok(&server, &["domain", "dns", DOMAIN]);
    assert!(!dns.contains("cli2._domainkey"), "{dns}");
    let out = server.cli(&["dkim", "remove", DOMAIN, "cli2"], None);
    common::assert_refused(&out, "has no key with selector `cli2`");
    let key = cli_key(&server, &["admin", "read"]);
    let http = reqwest::Client::new();
    let listed_by_api: Value = http
        .get(format!(
            "http://{}/api/v1/domains/{DOMAIN}/dkim",
            server.http
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut selectors: Vec<&str> = listed_by_api["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["selector"].as_str().unwrap())
        .collect();
    selectors.sort();
    assert_eq!(selectors, ["cli1", "cli3"], "{listed_by_api}");
    let resp = http
        .delete(format!(
            "http://{}/api/v1/domains/{DOMAIN}/dkim/cli2",
            server.http
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Each change is audited by the CLI, naming the key; no entry holds key material.
    let targets = |event: &str| -> Vec<String> {
        server
            .audit_file_events(event)
            .iter()
            .map(|e| e["target"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(targets("dkim.create"), ["example.test/cli1"]);
    assert_eq!(
        targets("dkim.rotate"),
        ["example.test/cli2", "example.test/cli3"]
    );
    assert_eq!(targets("dkim.delete"), ["example.test/cli2"]);
    let audit = std::fs::read_to_string(server.dir.path().join("audit.log")).unwrap();
    assert_no_private_key(&audit);
    // Nor does the server's log file, which saw the keys opened and used.
    drop(c);
    let log = std::fs::read_to_string(server.dir.path().join("log/mairust.log")).unwrap();
    assert!(
        log.contains("\"ready\""),
        "the log file is the server's: {log}"
    );
    assert_no_private_key(&log);
}
