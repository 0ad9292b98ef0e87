//! The checks of mail from other servers (SPF of MAIL FROM and HELO, DKIM, DMARC, ARC)
//! against the in-test DNS server, with signatures and ARC seals made by dkimpy (an
//! implementation we share no code with): pass, fail, softfail and none; a DMARC
//! `p=reject` failure refused with 550 5.7.1, also for mail claiming one of our own
//! domains; `p=quarantine` and a bare SPF `-all` failure delivered to the Junk mailbox,
//! or refused with `spf_fail: reject` even when the message names no From: domain; our
//! Authentication-Results on top and a forged one claiming our name removed, with the
//! checks on or off; results in the API's message view and in `mairust_mail_auth_total`.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Command;

use common::dns::{DnsServer, Zone};
use common::raw::RawClient;
use common::{Options, TestServer};
use serde_json::Value;

const SIGNER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/dkim_sign.py");
const SEALER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/arc_sign.py");

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
    // HELO names (RFC 7208 §2.3) with SPF records of their own.
    put("helo-pass.test", "v=spf1 ip4:127.0.0.1 -all");
    put("helo-fail.test", "v=spf1 -all");
    // A forwarder that seals what it passes on with ARC; no DMARC record.
    put("forwarder.test", "v=spf1 ip4:127.0.0.1 -all");
    let mut a = HashMap::new();
    a.insert("none.test".to_string(), vec![Ipv4Addr::new(192, 0, 2, 9)]);
    Zone {
        txt,
        a,
        silent: vec!["slow.test".into()],
        ..Zone::default()
    }
}

/// A server checking mail against `dns`, with `mail_auth` lines added.
fn server(dns: &DnsServer, mail_auth: &[&str]) -> TestServer {
    // A third of it per step (SPF, DKIM, DMARC): 1 s.
    let mut mail_auth_yaml = vec!["verify: true".to_string(), "timeout_seconds: 3".into()];
    mail_auth_yaml.extend(mail_auth.iter().map(|l| l.to_string()));
    TestServer::start_with(Options {
        mail_auth_yaml,
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
    send_as(server, "mta.sender.test", mail_from, data).await
}

/// [`send`] by a client that says `EHLO <helo>`.
async fn send_as(server: &TestServer, helo: &str, mail_from: &str, data: &[u8]) -> (u16, String) {
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect(&format!("EHLO {helo}"), 250).await;
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
    message: &[u8],
) -> Option<(Vec<u8>, String)> {
    dkimpy(&[SIGNER, algorithm, domain, selector], message)
}

/// `message` sealed by dkimpy with an ARC set for `domain` (whose
/// `Authentication-Results: <domain>; ...` field it must carry), with a new RSA key;
/// the record to publish. The tool checks the seal verifies before handing it over.
/// `None` when dkimpy is missing outside CI.
fn dkimpy_sealed(domain: &str, selector: &str, message: &[u8]) -> Option<(Vec<u8>, String)> {
    dkimpy(&[SEALER, domain, selector], message)
}

/// Runs a dkimpy tool (`args`, then the input and output files) on `message`: what it
/// wrote and the record it printed.
fn dkimpy(args: &[&str], message: &[u8]) -> Option<(Vec<u8>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in.eml"), dir.path().join("out.eml"));
    std::fs::write(&src, message).unwrap();
    let out = Command::new("python3")
        .args(args)
        .arg(&src)
        .arg(&dst)
        .output()
        .expect("python3");
    if out.status.code() == Some(3) {
        assert!(
            std::env::var("CI").is_err(),
            "dkimpy, cryptography, PyNaCl and authres are needed in CI"
        );
        eprintln!("dkimpy not installed: checks against it not run");
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
        message("news@sender.test", "dkim-rsa", "").as_bytes(),
    );
    let signed_ed = dkimpy_signed(
        "ed25519",
        "sender.test",
        "ed1",
        message("news@sender.test", "dkim-ed", "").as_bytes(),
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
    let server = server(&dns, &[]);
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
    assert_eq!(s.summary["spf_helo"], "none", "{}", s.summary);

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

/// Our Authentication-Results field of a stored message: on top, before our Received.
fn our_results(raw: &str) -> &str {
    assert!(
        raw.starts_with("Authentication-Results: mx.example.test;"),
        "{raw}"
    );
    raw.split("\r\nReceived: ").next().unwrap()
}

/// The one result of `results` (our Authentication-Results field) whose text contains
/// `property` (e.g. `smtp.helo=`), trimmed.
fn result_with<'a>(results: &'a str, property: &str) -> &'a str {
    let found: Vec<&str> = results
        .split(';')
        .filter(|r| r.contains(property))
        .map(str::trim)
        .collect();
    assert_eq!(found.len(), 1, "one {property} in {results}");
    found[0]
}

/// RFC 7208 §2.3: the HELO name is an SPF identity of its own. Its result is recorded
/// beside MAIL FROM's (summary, `spf=... smtp.helo=`, `spf_helo` in the metric) and
/// costs nothing by itself: DMARC and `spf_fail` go by MAIL FROM.
#[tokio::test]
async fn the_helo_name_is_checked_with_spf_too() {
    let dns = DnsServer::start(zone());
    let server = server(&dns, &[]);
    let key = server.admin_key();
    let from = "news@sender.test";
    for (helo, id, expected) in [
        ("helo-pass.test", "helo-pass", "pass"),
        ("helo-fail.test", "helo-fail", "fail"),
        // An address literal names no domain: nothing to look up.
        ("[127.0.0.1]", "helo-literal", "none"),
    ] {
        let data = message(from, id, "");
        let (code, text) = send_as(&server, helo, from, data.as_bytes()).await;
        assert_eq!(code, 250, "{id}: {text}");
        let s = stored(&server, &key, id).await;
        assert_eq!(s.summary["spf_helo"], expected, "{id}: {}", s.summary);
        assert_eq!(s.summary["spf"], "pass", "{id}: {}", s.summary);
        assert_eq!(s.summary["dmarc"], "pass", "{id}: {}", s.summary);
        assert_eq!(s.summary["action"], "accept", "{id}: {}", s.summary);
        assert_eq!(s.mailbox, "INBOX", "{id}");
        let results = our_results(&s.raw);
        let helo_result = result_with(results, "smtp.helo=");
        assert!(
            helo_result.starts_with(&format!("spf={expected} "))
                && helo_result.ends_with(&format!("smtp.helo={helo}")),
            "{id}: {results}"
        );
        let mail_from_result = result_with(results, "smtp.mailfrom=");
        assert!(
            mail_from_result.starts_with("spf=pass ")
                && mail_from_result.ends_with("smtp.mailfrom=news@sender.test"),
            "{id}: {results}"
        );
    }

    // A bounce's MAIL FROM identity is postmaster@<HELO>, the HELO identity itself: both
    // fail, and the MAIL FROM failure is what `spf_fail` (Junk by default) acts on.
    let data = message("mailer-daemon@helo-fail.test", "helo-bounce", "");
    let (code, text) = send_as(&server, "helo-fail.test", "", data.as_bytes()).await;
    assert_eq!(code, 250, "{text}");
    let s = stored(&server, &key, "helo-bounce").await;
    assert_eq!(s.summary["spf"], "fail", "{}", s.summary);
    assert_eq!(s.summary["spf_helo"], "fail", "{}", s.summary);
    assert_eq!(s.summary["action"], "junk", "{}", s.summary);
    assert_eq!(s.mailbox, "Junk");
    let results = our_results(&s.raw);
    assert!(
        result_with(results, "smtp.helo=").starts_with("spf=fail "),
        "{results}"
    );
    assert!(
        result_with(results, "smtp.mailfrom=").starts_with("spf=fail "),
        "{results}"
    );

    let metrics = server.metrics_text().await;
    let count = |result: &str| {
        common::sample(
            &metrics,
            &format!("mairust_mail_auth_total{{method=\"spf_helo\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(
        (count("pass"), count("fail"), count("none")),
        (1.0, 2.0, 1.0)
    );
}

/// `mail_auth.spf_fail` acts on an SPF `fail` of MAIL FROM wherever DMARC has no
/// verdict: also for a message that names no From: domain (no From: field, an empty
/// group, an address without a domain), which must not be a way around it.
#[tokio::test]
async fn spf_fail_reject_refuses_mail_that_names_no_from_domain() {
    let dns = DnsServer::start(zone());
    let server = server(&dns, &["spf_fail: reject"]);
    let key = server.admin_key();
    let data = |from_field: &str, id: &str| {
        format!(
            "{from_field}To: <bob@example.test>\r\nSubject: check {id}\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{id}>\r\n\r\nHello Bob,\r\nthis is {id}.\r\n"
        )
    };
    let no_from_domain = [
        ("no-from", ""),
        ("group-from", "From: undisclosed-recipients:;\r\n"),
        ("bare-from", "From: <postmaster>\r\n"),
    ];
    for &(id, from_field) in no_from_domain
        .iter()
        .chain([&("with-from", "From: <x@fail.test>\r\n")])
    {
        let (code, text) = send(&server, "x@fail.test", data(from_field, id).as_bytes()).await;
        assert_eq!(code, 550, "{id}: {text}");
        assert!(
            text.contains("5.7.1") && text.contains("SPF record of fail.test"),
            "{id}: {text}"
        );
        assert!(server.messages_with_id(id).await.is_empty(), "{id}");
    }
    // The same messages from a sender SPF does not fail are taken: the refusals were
    // SPF's.
    for (id, from_field) in no_from_domain {
        let id = format!("{id}-softfail");
        let (code, text) = send(&server, "x@softfail.test", data(from_field, &id).as_bytes()).await;
        assert_eq!(code, 250, "{id}: {text}");
        let s = stored(&server, &key, &id).await;
        assert_eq!(s.summary["spf"], "softfail", "{id}: {}", s.summary);
        assert_eq!(s.summary["dmarc"], "none", "{id}: {}", s.summary);
        assert_eq!(s.summary["from_domain"], "", "{id}: {}", s.summary);
        assert_eq!(s.summary["action"], "accept", "{id}: {}", s.summary);
        assert_eq!(s.mailbox, "INBOX", "{id}");
    }
}

/// With the checks off (`mail_auth.verify: false`) we write no verdict, and still none
/// that arrives claiming our authserv-id reaches a reader; another server's is kept.
#[tokio::test]
async fn forged_results_are_removed_with_the_checks_off() {
    let server = TestServer::start_with(Options {
        mail_auth_yaml: vec!["verify: false".into()],
        ..Options::default()
    });
    let data = message(
        "x@softfail.test",
        "forged-unchecked",
        "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=ceo@bank.test\r\nAuthentication-Results: relay.other.test; dkim=pass header.d=other.test\r\nAuthentication-Results: \"MX.Example.Test\";\r\n dmarc=pass header.from=bank.test\r\n",
    );
    let (code, text) = send(&server, "x@softfail.test", data.as_bytes()).await;
    assert_eq!(code, 250, "{text}");
    let rows = server.messages_with_id("forged-unchecked").await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].authentication.is_none(), "not checked");
    let raw = String::from_utf8(server.object(&rows[0].object_key).await.unwrap()).unwrap();
    assert!(!raw.contains("bank.test"), "{raw}");
    assert!(
        !raw.to_ascii_lowercase()
            .contains("authentication-results: mx.example.test"),
        "{raw}"
    );
    assert!(
        raw.contains("Authentication-Results: relay.other.test; dkim=pass header.d=other.test\r\n"),
        "{raw}"
    );
    assert!(
        raw.contains("\r\nSubject: check forged-unchecked\r\n"),
        "{raw}"
    );
}

/// ARC (RFC 8617): a message a forwarder sealed with dkimpy, with a key the in-test DNS
/// serves, passes; the same message with its body changed after sealing does not. A
/// large one (body hashes made off the async threads) passes too, DKIM signature and
/// ARC seal alike.
#[tokio::test]
async fn arc_sealed_mail_is_verified() {
    let mut zone = zone();
    let forwarder_results =
        "Authentication-Results: forwarder.test; spf=pass smtp.mailfrom=news@origin.test\r\n";
    let from = "news@forwarder.test";
    let Some((sealed, record)) = dkimpy_sealed(
        "forwarder.test",
        "arc1",
        message(from, "arc-pass", forwarder_results).as_bytes(),
    ) else {
        return;
    };
    zone.txt
        .insert("arc1._domainkey.forwarder.test".into(), vec![record]);
    let line = format!("{}\r\n", "y".repeat(998));
    let large = message(from, "arc-large", forwarder_results) + &line.repeat(300);
    let (signed, record) =
        dkimpy_signed("rsa", "forwarder.test", "dkim1", large.as_bytes()).unwrap();
    zone.txt
        .insert("dkim1._domainkey.forwarder.test".into(), vec![record]);
    let (large, record) = dkimpy_sealed("forwarder.test", "arc2", &signed).unwrap();
    assert!(large.len() > 256 * 1024, "{}", large.len());
    zone.txt
        .insert("arc2._domainkey.forwarder.test".into(), vec![record]);
    let dns = DnsServer::start(zone);
    let server = server(&dns, &[]);
    let key = server.admin_key();

    for (id, data, dkim) in [
        ("arc-pass", &sealed, serde_json::json!([])),
        ("arc-large", &large, serde_json::json!(["pass"])),
    ] {
        let (code, text) = send(&server, from, data).await;
        assert_eq!(code, 250, "{id}: {text}");
        let s = stored(&server, &key, id).await;
        assert_eq!(s.summary["arc"], "pass", "{id}: {}", s.summary);
        assert_eq!(s.summary["dkim"], dkim, "{id}: {}", s.summary);
        assert_eq!(s.summary["action"], "accept", "{id}: {}", s.summary);
        let results = our_results(&s.raw);
        assert!(
            result_with(results, "smtp.remote-ip=").starts_with("arc=pass "),
            "{id}: {results}"
        );
        // The forwarder's own verdict is another server's: kept.
        assert!(s.raw.contains(forwarder_results), "{id}");
    }

    // The body changed after sealing: the last ARC-Message-Signature's body hash no
    // longer matches (mail-auth reports that `neutral`, as for DKIM).
    let text = String::from_utf8(sealed).unwrap();
    let changed = text
        .replace("this is arc-pass", "this is arc-pasX")
        .replace("arc-pass>", "arc-broken>");
    assert_ne!(changed, text);
    let (code, said) = send(&server, from, changed.as_bytes()).await;
    assert_eq!(code, 250, "{said}");
    let rows = server.messages_with_id("arc-broken").await;
    assert_eq!(rows.len(), 1);
    let summary: Value = serde_json::from_str(rows[0].authentication.as_deref().unwrap()).unwrap();
    assert_eq!(summary["arc"], "neutral", "{summary}");
    let raw = String::from_utf8(server.object(&rows[0].object_key).await.unwrap()).unwrap();
    let results = our_results(&raw);
    assert!(
        result_with(results, "smtp.remote-ip=").starts_with("arc=neutral"),
        "{results}"
    );

    let metrics = server.metrics_text().await;
    assert_eq!(
        common::sample(
            &metrics,
            "mairust_mail_auth_total{method=\"arc\",result=\"pass\"}"
        ),
        2.0
    );
}
