//! The checks of mail from other servers (SPF, DKIM, DMARC, ARC) against the in-test
//! DNS server, with signatures made by dkimpy (an implementation we share no code
//! with): pass, fail, softfail and none; a DMARC `p=reject` failure refused with 550
//! 5.7.1, also for mail claiming one of our own domains; `p=quarantine` and a bare SPF
//! `-all` failure delivered to the Junk mailbox; our Authentication-Results on top and
//! a forged one claiming our name removed; results in the API's message view and in
//! `mairust_mail_auth_total`.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Command;

use common::dns::{DnsServer, Zone};
use common::raw::RawClient;
use common::{Options, TestServer};
use serde_json::Value;

const SIGNER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/dkim_sign.py");

fn zone() -> Zone {
    let mut txt: HashMap<String, Vec<String>> = HashMap::new();
    let mut put = |name: &str, text: &str| {
        txt.entry(name.into()).or_default().push(text.into());
    };
    put("sender.test", "v=spf1 ip4:127.0.0.1 -all");
    put("_dmarc.sender.test", "v=DMARC1; p=reject");
    put("softfail.test", "v=spf1 ~all");
    put("fail.test", "v=spf1 -all");
    put("rejecting.test", "v=spf1 -all");
    put("_dmarc.rejecting.test", "v=DMARC1; p=reject");
    put("quarantining.test", "v=spf1 -all");
    put("_dmarc.quarantining.test", "v=DMARC1; p=quarantine");
    // Our own domain, as its owner would publish it: only 192.0.2.1 sends its mail.
    put("example.test", "v=spf1 ip4:192.0.2.1 -all");
    put("_dmarc.example.test", "v=DMARC1; p=reject");
    let mut a = HashMap::new();
    a.insert("none.test".to_string(), vec![Ipv4Addr::new(192, 0, 2, 9)]);
    Zone {
        txt,
        a,
        silent: vec!["slow.test".into()],
        ..Zone::default()
    }
}

fn server(dns: &DnsServer) -> TestServer {
    TestServer::start_with(Options {
        // A third of it per step (SPF, DKIM, DMARC): 1 s.
        mail_auth_yaml: vec!["verify: true".into(), "timeout_seconds: 3".into()],
        extra_yaml: format!("delivery:\n  dns:\n    nameservers: [\"{}\"]\n", dns.addr),
        ..Options::default()
    })
}

/// A message from `from` to bob with `id` as its Message-ID.
fn message(from: &str, id: &str, extra_headers: &str) -> String {
    format!(
        "{extra_headers}From: <{from}>\r\nTo: <bob@example.test>\r\nSubject: check {id}\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{id}>\r\n\r\nHello Bob,\r\nthis is {id}.\r\n"
    )
}

/// Sends `data` from `mail_from` to bob over the inbound listener: the reply to the
/// final dot.
async fn send(server: &TestServer, mail_from: &str, data: &[u8]) -> (u16, String) {
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO mta.sender.test", 250).await;
    c.expect(&format!("MAIL FROM:<{mail_from}>"), 250).await;
    c.expect(&format!("RCPT TO:<{}>", TestServer::address("bob")), 250)
        .await;
    c.expect("DATA", 354).await;
    let mut bytes = data.to_vec();
    bytes.extend_from_slice(b".\r\n");
    c.send(&bytes).await;
    let r = c.reply().await.expect("reply to the data");
    (r.code, r.text)
}

/// `message` signed by dkimpy for `domain` with a new key of `algorithm`; the record to
/// publish. `None` when dkimpy is missing outside CI.
fn dkimpy_signed(
    algorithm: &str,
    domain: &str,
    selector: &str,
    message: &str,
) -> Option<(Vec<u8>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in.eml"), dir.path().join("out.eml"));
    std::fs::write(&src, message).unwrap();
    let out = Command::new("python3")
        .args([SIGNER, algorithm, domain, selector])
        .arg(&src)
        .arg(&dst)
        .output()
        .expect("python3");
    if out.status.code() == Some(3) {
        assert!(
            std::env::var("CI").is_err(),
            "dkimpy, cryptography and PyNaCl are needed in CI"
        );
        eprintln!("dkimpy not installed: DKIM verification against it not run");
        return None;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = String::from_utf8(out.stdout).unwrap().trim().to_string();
    Some((std::fs::read(&dst).unwrap(), record))
}

struct Stored {
    summary: Value,
    raw: String,
    mailbox: String,
}

async fn stored(server: &TestServer, key: &str, id: &str) -> Stored {
    let rows = server.messages_with_id(id).await;
    assert_eq!(rows.len(), 1, "{id} stored once");
    let row = &rows[0];
    let raw = String::from_utf8(server.object(&row.object_key).await.unwrap()).unwrap();
    let listed = server
        .get_json(key, &format!("/api/v1/messages?q=check%20{id}"))
        .await;
    let view = &listed["data"][0];
    assert_eq!(view["message_id"], row.id, "{listed}");
    let summary: Value =
        serde_json::from_str(row.authentication.as_deref().expect("a summary")).unwrap();
    assert_eq!(
        view["authentication"], summary,
        "the API shows what is stored"
    );
    Stored {
        summary,
        raw,
        mailbox: view["mailbox"].as_str().unwrap().to_string(),
    }
}

#[tokio::test]
async fn senders_are_checked_with_spf_dkim_and_dmarc() {
    let mut zone = zone();
    // Messages signed by dkimpy, with both algorithms; the keys' records published.
    let signed_rsa = dkimpy_signed(
        "rsa",
        "sender.test",
        "rsa1",
        &message("news@sender.test", "dkim-rsa", ""),
    );
    let signed_ed = dkimpy_signed(
        "ed25519",
        "sender.test",
        "ed1",
        &message("news@sender.test", "dkim-ed", ""),
    );
    for (selector, signed) in [("rsa1", &signed_rsa), ("ed1", &signed_ed)] {
        if let Some((_, record)) = signed {
            zone.txt.insert(
                format!("{selector}._domainkey.sender.test"),
                vec![record.clone()],
            );
        }
    }
    let dns = DnsServer::start(zone);
    let server = server(&dns);
    let key = server.admin_key();

    // SPF pass, DKIM pass (dkimpy's RSA and Ed25519 signatures), DMARC pass.
    for (id, signed) in [("dkim-rsa", &signed_rsa), ("dkim-ed", &signed_ed)] {
        let Some((data, _)) = signed else { continue };
        let (code, text) = send(&server, "news@sender.test", data).await;
        assert_eq!(code, 250, "{text}");
        let s = stored(&server, &key, id).await;
        assert_eq!(s.summary["spf"], "pass", "{}", s.summary);
        assert_eq!(
            s.summary["dkim"],
            serde_json::json!(["pass"]),
            "{}",
            s.summary
        );
        assert_eq!(s.summary["dmarc"], "pass");
        assert_eq!(s.summary["action"], "accept");
        assert_eq!(s.mailbox, "INBOX");
        assert!(
            s.raw
                .starts_with("Authentication-Results: mx.example.test;"),
            "{}",
            s.raw
        );
        let header = s.raw.split("\r\nReceived: ").next().unwrap();
        assert!(
            header.contains("dkim=pass") && header.contains("header.i=@sender.test"),
            "{header}"
        );
        assert!(
            header.contains("spf=pass") && header.contains("dmarc=pass"),
            "{header}"
        );
    }

    // Changed after signing: the body (a body hash mismatch, reported `neutral` as
    // OpenDKIM does) or a signed header (the signature fails). SPF still passes aligned,
    // so DMARC passes and the message is taken.
    if let Some((data, _)) = &signed_rsa {
        let text = String::from_utf8(data.clone()).unwrap();
        let body_changed = text
            .replace("this is dkim-rsa", "this is dkim-rsX")
            .replace("dkim-rsa>", "dkim-body>");
        let subject_changed = text
            .replace("check dkim-rsa", "check dkim-subject")
            .replace("dkim-rsa>", "dkim-subject>");
        for (data, id, result) in [
            (body_changed, "dkim-body", "neutral"),
            (subject_changed, "dkim-subject", "fail"),
        ] {
            let (code, said) = send(&server, "news@sender.test", data.as_bytes()).await;
            assert_eq!(code, 250, "{said}");
            let rows = server.messages_with_id(id).await;
            let summary: Value =
                serde_json::from_str(rows[0].authentication.as_deref().unwrap()).unwrap();
            assert_eq!(
                summary["dkim"],
                serde_json::json!([result]),
                "{id}: {summary}"
            );
            assert_eq!(summary["dmarc"], "pass");
        }
    }

    // SPF softfail and none: taken, to the inbox.
    for (from, id, spf) in [
        ("x@softfail.test", "soft", "softfail"),
        ("x@none.test", "none", "none"),
    ] {
        let (code, text) = send(&server, from, message(from, id, "").as_bytes()).await;
        assert_eq!(code, 250, "{text}");
        let s = stored(&server, &key, id).await;
        assert_eq!(s.summary["spf"], spf, "{}", s.summary);
        assert_eq!(s.summary["dmarc"], "none");
        assert_eq!(s.mailbox, "INBOX");
    }

    // SPF -all fail without a DMARC policy: the Junk mailbox (mail_auth.spf_fail).
    let (code, text) = send(
        &server,
        "x@fail.test",
        message("x@fail.test", "spf-fail", "").as_bytes(),
    )
    .await;
    assert_eq!(code, 250, "{text}");
    let s = stored(&server, &key, "spf-fail").await;
    assert_eq!(s.summary["spf"], "fail");
    assert_eq!(s.summary["action"], "junk");
    assert_eq!(s.mailbox, "Junk");

    // DMARC p=quarantine failing: Junk.
    let from = "x@quarantining.test";
    let (code, text) = send(&server, from, message(from, "quarantined", "").as_bytes()).await;
    assert_eq!(code, 250, "{text}");
    let s = stored(&server, &key, "quarantined").await;
    assert_eq!(s.summary["dmarc"], "fail");
    assert_eq!(s.summary["dmarc_policy"], "quarantine");
    assert_eq!(s.mailbox, "Junk");
    let junk = server
        .get_json(&key, "/api/v1/messages?mailbox_name=Junk")
        .await;
    assert_eq!(junk["data"].as_array().unwrap().len(), 2, "{junk}");

    // DMARC p=reject failing: 550 5.7.1, nothing stored.
    let from = "x@rejecting.test";
    let (code, text) = send(&server, from, message(from, "rejected", "").as_bytes()).await;
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("5.7.1") && text.contains("rejecting.test"),
        "{text}"
    );
    assert!(server.messages_with_id("rejected").await.is_empty());

    // An outside client claiming our own domain, whose DMARC record says p=reject.
    let from = "ceo@example.test";
    let (code, text) = send(&server, from, message(from, "spoofed", "").as_bytes()).await;
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("DMARC") && text.contains("example.test"),
        "{text}"
    );
    assert!(server.messages_with_id("spoofed").await.is_empty());

    // The same spoof hidden from a DMARC check that reads one From: only: a second
    // From: field, the obsolete `From :` spelling, a From: of two domains. Each From:
    // domain any reader would see is checked, the strictest outcome wins.
    for (id, headers) in [
        ("two-froms", "From: <x@softfail.test>\r\n"),
        ("two-domains", ""),
        ("obsolete", ""),
    ] {
        let data = match id {
            "two-domains" => message("ceo@example.test>, <x@softfail.test", id, headers),
            "obsolete" => {
                message("ceo@example.test", id, headers).replacen("From: <", "From : <", 1)
            }
            _ => message("ceo@example.test", id, headers),
        };
        let (code, text) = send(&server, "x@softfail.test", data.as_bytes()).await;
        assert_eq!(code, 550, "{id}: {text}");
        assert!(text.contains("example.test"), "{id}: {text}");
    }

    // A MAIL FROM domain whose DNS never answers: SPF times out (temperror), which
    // aligns with nothing, so the spoof still fails DMARC, within the time budget.
    let started = std::time::Instant::now();
    let (code, text) = send(
        &server,
        "x@slow.test",
        message("ceo@example.test", "slow", "").as_bytes(),
    )
    .await;
    assert_eq!(code, 550, "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The From: domain's own DMARC record unreadable: deferred, not let through.
    let (code, text) = send(
        &server,
        "x@softfail.test",
        message("x@slow.test", "slow-from", "").as_bytes(),
    )
    .await;
    assert_eq!(code, 451, "{text}");

    // A bounce (null sender) is checked as postmaster@<HELO>.
    let (code, text) = send(
        &server,
        "",
        message("mailer-daemon@softfail.test", "bounce", "").as_bytes(),
    )
    .await;
    assert_eq!(code, 250, "{text}");
    let s = stored(&server, &key, "bounce").await;
    assert_eq!(
        s.summary["spf"], "none",
        "mta.sender.test publishes no SPF: {}",
        s.summary
    );

    // A forged verdict in our name is removed; another server's is kept.
    let forged = message(
        "x@softfail.test",
        "forged",
        "Authentication-Results: mx.example.test; dkim=pass header.d=bank.test; dmarc=pass\r\nAuthentication-Results: relay.other.test; spf=pass\r\nAuthentication-Results: (quoted) \"MX.Example.Test\";\r\n dmarc=pass header.from=bank.test\r\n",
    );
    let (code, text) = send(&server, "x@softfail.test", forged.as_bytes()).await;
    assert_eq!(code, 250, "{text}");
    let s = stored(&server, &key, "forged").await;
    assert_eq!(
        s.raw
            .matches("Authentication-Results: mx.example.test")
            .count(),
        1,
        "{}",
        s.raw
    );
    assert!(!s.raw.contains("header.d=bank.test"), "{}", s.raw);
    assert!(!s.raw.contains("header.from=bank.test"), "{}", s.raw);
    assert!(
        s.raw
            .contains("Authentication-Results: relay.other.test; spf=pass")
    );

    let metrics = server.metrics_text().await;
    let count = |series: &str| common::sample(&metrics, series);
    assert!(count("mairust_mail_auth_total{method=\"spf\",result=\"fail\"}") >= 4.0);
    assert!(count("mairust_mail_auth_total{method=\"spf\",result=\"softfail\"}") >= 2.0);
    assert!(count("mairust_mail_auth_total{method=\"dmarc\",result=\"fail\"}") >= 3.0);
    if signed_rsa.is_some() {
        assert!(count("mairust_mail_auth_total{method=\"dkim\",result=\"pass\"}") >= 2.0);
        assert!(count("mairust_mail_auth_total{method=\"dkim\",result=\"fail\"}") >= 1.0);
        assert!(count("mairust_mail_auth_total{method=\"dkim\",result=\"neutral\"}") >= 1.0);
    }
    assert_eq!(
        count("mairust_mail_auth_total{method=\"arc\",result=\"pass\"}"),
        0.0
    );
}
