//! Authenticated submission (SPEC M3, S5) against the running server: an account may
//! send as its own address only — envelope, null sender and From: header — unless
//! `smtp.submission.*` says otherwise, and every message it submits records it (the
//! API's message view, our Received header, hook calls). `POST /send` sends as an
//! existing user only, passes the pre_receive hooks, refuses bare CRs and unsafe
//! addresses, and writes no key identifier into mail that leaves.

mod common;

use std::time::Duration;

use common::hook_receiver::{ALLOW_LOOPBACK, Answer, HookReceiver};
use common::raw::RawClient;
use common::sink::Sink;
use common::{Options, PASSWORD, TestServer, eventually, message, tls_login};
use mail_send::smtp::message::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "a-secret-of-enough-length";

/// A plaintext session on the submission port, logged in as `user`.
async fn login(server: &TestServer, user: &str) -> RawClient {
    let (mut c, _) = RawClient::connect(server.submission).await;
    c.expect("EHLO client.test", 250).await;
    c.expect(
        &format!("AUTH PLAIN {}", plain(&TestServer::address(user))),
        235,
    )
    .await;
    c
}

fn plain(user: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"))
}

fn plaintext(smtp_yaml: &[&str]) -> Options {
    Options {
        allow_plaintext_auth: true,
        smtp_yaml: smtp_yaml.iter().map(|l| l.to_string()).collect(),
        ..Options::default()
    }
}

/// MAIL FROM `sender`, RCPT carol, DATA with `headers` (a Message-ID is added): the
/// reply to the final dot, or the refusal of MAIL FROM.
async fn transaction(c: &mut RawClient, sender: &str, headers: &str, id: &str) -> (u16, String) {
    let r = c.cmd(&format!("MAIL FROM:<{sender}>")).await;
    if r.code != 250 {
        return (r.code, r.text);
    }
    c.expect(&format!("RCPT TO:<{}>", TestServer::address("carol")), 250)
        .await;
    c.expect("DATA", 354).await;
    c.send(format!("{headers}Message-ID: <{id}>\r\nSubject: s\r\n\r\nbody\r\n.\r\n").as_bytes())
        .await;
    let r = c.reply().await.expect("reply to the data");
    (r.code, r.text)
}

async fn api(
    server: &TestServer,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{}/api/v1{path}", server.http))
        .bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn cli_key(server: &TestServer, scopes: &[&str]) -> String {
    let mut args = vec!["admin", "create-key", "--name", "sender-test"];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    server.cli_ok(&args, None).trim().to_string()
}

/// The API's view of the newest message in `user`'s mailboxes.
async fn newest_view(server: &TestServer, key: &str, user: &str) -> Value {
    let (s, b) = api(
        server,
        key,
        reqwest::Method::GET,
        &format!("/messages?user={}&limit=1", TestServer::address(user)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["data"][0].clone()
}

async fn raw(server: &TestServer, key: &str, entry: &Value) -> String {
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/messages/{}/raw",
            server.http, entry["id"]
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

#[tokio::test]
async fn spoofed_senders_of_an_authenticated_user_are_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(plaintext(&[]));
    let mut c = login(&server, "bob").await;
    let bob = TestServer::address("bob");
    let alice = TestServer::address("alice");
    // The envelope: someone else's address, and the null sender.
    let (code, text) = transaction(&mut c, &alice, "", "env@x").await;
    assert_eq!(code, 553, "{text}");
    assert!(text.starts_with("5.7.1 Sender address not owned"), "{text}");
    let (code, text) = transaction(&mut c, "", "", "null@x").await;
    assert_eq!(code, 553, "{text}");
    assert!(text.starts_with("5.7.1 Null sender"), "{text}");
    // The From: header, known at the end of DATA: 550 5.7.1 (RFC 5321 §4.3.2).
    let spoofs = [
        ("from-other@x", format!("From: Alice <{alice}>\r\n")),
        ("from-remote@x", "From: ceo@bank.test\r\n".to_string()),
        (
            "from-two@x",
            format!("From: <{bob}>\r\nFrom: <ceo@bank.test>\r\n"),
        ),
        ("from-list@x", format!("From: <{bob}>, <ceo@bank.test>\r\n")),
        (
            "from-name@x",
            format!("From: \"ceo@bank.test\" <{bob}>\r\n"),
        ),
        ("from-none@x", String::new()),
    ];
    for (id, headers) in &spoofs {
        let (code, text) = transaction(&mut c, &bob, headers, id).await;
        assert_eq!(code, 550, "{id}: {text}");
        assert!(text.starts_with("5.7.1 "), "{id}: {text}");
    }
    // The session goes on: its own address passes.
    let (code, text) = transaction(&mut c, &bob, &format!("From: Bob <{bob}>\r\n"), "own@x").await;
    assert_eq!(code, 250, "{text}");
    c.expect("QUIT", 221).await;

    for id in ["env@x", "null@x"]
        .into_iter()
        .chain(spoofs.iter().map(|(id, _)| *id))
    {
        assert!(server.messages_with_id(id).await.is_empty(), "{id} stored");
    }
    assert_eq!(server.inbox("carol").await.len(), 1, "only the honest one");
    // Refusals are logged and audited with the account and the reason.
    assert!(
        eventually(Duration::from_secs(10), || async {
            server.audit_file_events("submission.sender_refused").len() == 2 + spoofs.len()
        })
        .await,
        "audited: {:?}",
        server.audit_file_events("submission.sender_refused")
    );
    let audited = server.audit_file_events("submission.sender_refused");
    assert!(audited.iter().all(|e| e["actor"] == format!("smtp:{bob}")));
    let mut reasons: Vec<&str> = audited
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap())
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        [
            "envelope_sender_not_owned",
            "from_address_not_owned",
            "from_address_not_owned",
            "from_address_not_owned",
            "from_address_not_owned",
            "no_from_address",
            "null_sender",
            "several_from_headers",
        ]
    );
    assert!(server.log_contains("\"event\":\"sender_refused\""));
}

#[tokio::test]
async fn the_sending_account_is_recorded_on_the_message() {
    let server = TestServer::start();
    let key = cli_key(&server, &["read"]);
    let bob = TestServer::address("bob");
    let alice = TestServer::address("alice");
    // A real client: STARTTLS, AUTH, then the message.
    let mut client = tls_login(server.submission.port(), false, &bob, PASSWORD)
        .await
        .expect("STARTTLS and AUTH");
    let body = message(&bob, &alice, "traced@example.test", "who sent this?");
    client
        .send(Message::new(
            bob.as_str(),
            [alice.as_str()],
            body.trim_end().as_bytes(),
        ))
        .await
        .expect("sent");
    client.quit().await.ok();
    let rows = server.messages_with_id("traced@example.test").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].submitted_by.as_deref(), Some(bob.as_str()));
    let view = newest_view(&server, &key, "alice").await;
    assert_eq!(view["header_message_id"], "traced@example.test");
    assert_eq!(view["submitted_by"], bob);
    let stored = raw(&server, &key, &view).await;
    let received = stored.split("\r\n\t").take(2).collect::<Vec<_>>().join(" ");
    assert!(
        received.starts_with("Received: from ")
            && received.contains(&format!("(authenticated as {bob}) by mx.example.test"))
            && received.contains("with ESMTPSA"),
        "{stored}"
    );

    // Mail from another server has no submitter.
    assert_eq!(
        common::deliver_to_bob(&server, "inbound@remote.test")
            .await
            .code,
        250
    );
    let view = newest_view(&server, &key, "bob").await;
    assert_eq!(view["header_message_id"], "inbound@remote.test");
    assert_eq!(view["submitted_by"], Value::Null);
    assert!(!raw(&server, &key, &view).await.contains("authenticated as"));

    // The OpenAPI document describes the field.
    let (_, doc) = server.http_get("/api/v1/openapi.json").await;
    let field = &doc["components"]["schemas"]["MessageView"]["properties"]["submitted_by"];
    assert!(
        field.is_object(),
        "{}",
        doc["components"]["schemas"]["MessageView"]
    );
}

/// Each `smtp.submission` switch turns its check off and leaves the others on; the
/// account is still recorded on what it sends.
#[tokio::test]
async fn each_check_can_be_turned_off() {
    let bob = TestServer::address("bob");
    let alice = TestServer::address("alice");
    let own_from = format!("From: <{bob}>\r\n");
    let alice_from = format!("From: <{alice}>\r\n");
    for (switch, allowed) in [
        ("allow_null_sender: true", ("", own_from.as_str())),
        (
            "enforce_envelope_sender: false",
            (alice.as_str(), own_from.as_str()),
        ),
        (
            "enforce_from_header: false",
            (bob.as_str(), alice_from.as_str()),
        ),
    ] {
        let server = TestServer::start_with(plaintext(&["submission:", &format!("  {switch}")]));
        let mut c = login(&server, "bob").await;
        let (code, text) = transaction(&mut c, allowed.0, allowed.1, "allowed@x").await;
        assert_eq!(code, 250, "{switch}: {text}");
        let rows = server.messages_with_id("allowed@x").await;
        assert_eq!(rows.len(), 1, "{switch}");
        assert_eq!(rows[0].submitted_by.as_deref(), Some(bob.as_str()));
        // The other checks still hold.
        let others = [
            ("", own_from.as_str(), "allow_null_sender"),
            (alice.as_str(), own_from.as_str(), "enforce_envelope_sender"),
            (bob.as_str(), alice_from.as_str(), "enforce_from_header"),
        ];
        for (sender, headers, check) in others {
            if switch.starts_with(check) {
                continue;
            }
            let (code, text) = transaction(&mut c, sender, headers, "refused@x").await;
            assert!(
                matches!(code, 550 | 553) && text.starts_with("5.7.1 "),
                "{switch}, {check}: {code} {text}"
            );
        }
        assert!(server.messages_with_id("refused@x").await.is_empty());
    }
}

#[tokio::test]
async fn send_refuses_unknown_senders_bare_crs_and_unsafe_addresses() {
    let server = TestServer::start();
    let key = cli_key(&server, &["send"]);
    let bob = TestServer::address("bob");
    let alice = TestServer::address("alice");
    server.cli_ok(&["user", "disable", &TestServer::address("carol")], None);
    let cases = [
        (
            json!({"from": "nobody@example.test", "to": [alice]}),
            "from",
            "no user nobody@example.test",
        ),
        (
            json!({"from": TestServer::address("carol"), "to": [alice]}),
            "from",
            "disabled",
        ),
        (
            json!({"from": bob, "to": [alice], "text": "one\rtwo"}),
            "text",
            "bare CR",
        ),
        (
            json!({"from": bob, "to": [alice], "text": "ok\r\n", "html": "<p>a\r</p>"}),
            "html",
            "bare CR",
        ),
        (
            json!({"from": bob, "to": ["\"x>y\"@remote.test"]}),
            "to",
            "cannot be sent safely",
        ),
        (
            json!({"from": bob, "to": [alice], "cc": ["\"a,b\"@remote.test"]}),
            "cc",
            "cannot be sent safely",
        ),
        (
            json!({"from": bob, "to": [alice], "bcc": ["\"a\\\"b\"@remote.test"]}),
            "bcc",
            "cannot be sent safely",
        ),
        (
            json!({"from": bob, "to": ["a\u{85}b@remote.test"]}),
            "to",
            "cannot be sent safely",
        ),
        (
            json!({"from": bob, "to": ["\"a\u{1}b\"@remote.test"]}),
            "to",
            "is not an address",
        ),
        (
            json!({"from": "\"bob>\"@example.test", "to": [alice]}),
            "from",
            "cannot be sent safely",
        ),
        // The pipeline's From: rule, as over SMTP: many clients show only the name.
        (
            json!({"from": bob, "from_name": "ceo@bank.test", "to": [alice]}),
            "from_name",
            "from_address_not_owned",
        ),
    ];
    for (mut request, field, says) in cases {
        request["subject"] = json!("s");
        if request.get("text").is_none() {
            request["text"] = json!("t");
        }
        let (s, b) = api(
            &server,
            &key,
            reqwest::Method::POST,
            "/send",
            Some(request.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{request}: {b}");
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR", "{b}");
        assert_eq!(b["error"]["details"][0]["field"], field, "{b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(says),
            "{request}: {b}"
        );
    }
    assert!(server.inbox("alice").await.is_empty(), "nothing stored");
    // The From: refusal is audited as over SMTP, with the key as the actor.
    assert!(
        eventually(Duration::from_secs(10), || async {
            !server
                .audit_file_events("submission.sender_refused")
                .is_empty()
        })
        .await
    );
    let audited = &server.audit_file_events("submission.sender_refused")[0];
    assert!(
        audited["actor"].as_str().unwrap().starts_with("api-key:"),
        "{audited}"
    );
    assert_eq!(audited["details"]["reason"], "from_address_not_owned");
    assert_eq!(audited["details"]["address"], "ceo@bank.test");
    // Line ends written as LF or CRLF are fine.
    let request = json!({"from": bob, "to": [alice], "subject": "s", "text": "one\ntwo\r\nthree"});
    let (s, b) = api(&server, &key, reqwest::Method::POST, "/send", Some(request)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
}

/// `request` to `/send` while the pre_receive hook refuses with `text`: 422 naming it.
async fn refused_by_hook(
    server: &TestServer,
    key: &str,
    receiver: &HookReceiver,
    request: Value,
    text: &str,
) {
    receiver.script(&[Answer::json(json!({"action": "reject", "message": text}))]);
    let (s, b) = api(server, key, reqwest::Method::POST, "/send", Some(request)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("pre_receive hook: {text}")),
        "{b}"
    );
}

#[tokio::test]
async fn send_passes_the_hooks_and_records_the_user_not_the_key() {
    let sink = Sink::start();
    let receiver = HookReceiver::start(SECRET);
    let hook = |id: &str, event: &str| {
        format!(
            "  - id: {id}\n    event: {event}\n    url: {}\n    secret: {SECRET}\n",
            receiver.url()
        )
    };
    let server = TestServer::start_with(Options {
        extra_yaml: format!(
            "{ALLOW_LOOPBACK}hooks:\n{}{}queue:\n  poll_interval_seconds: 0.2\ndelivery:\n  routes: {{remote.test: {}}}\n",
            hook("policy", "pre_receive"),
            hook("outbound", "pre_send"),
            sink.addr
        ),
        ..Options::default()
    });
    let key = cli_key(&server, &["send", "read"]);
    let bob = TestServer::address("bob");
    let alice = TestServer::address("alice");
    let send = |to: Vec<&str>, subject: &str| json!({"from": bob, "from_name": "Bob", "to": to, "subject": subject, "text": "hello"});

    // A pre_receive refusal: 422, nothing stored, nothing queued.
    refused_by_hook(
        &server,
        &key,
        &receiver,
        send(vec![&alice], "refused"),
        "not today",
    )
    .await;
    assert!(server.inbox("alice").await.is_empty());

    // Allowed and tagged: alice gets it, the remote friend too.
    receiver.script(&[Answer::json(
        json!({"action": "allow", "tags": ["checked"]}),
    )]);
    let (s, b) = api(
        &server,
        &key,
        reqwest::Method::POST,
        "/send",
        Some(send(vec![&alice, "friend@remote.test"], "allowed")),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let calls = receiver.calls();
    let events: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.hook.as_str(), c.body["event"].as_str().unwrap()))
        .collect();
    // The refused message never reached pre_send.
    assert_eq!(
        events,
        [
            ("policy", "pre_receive"),
            ("policy", "pre_receive"),
            ("outbound", "pre_send")
        ]
    );
    for call in &calls[1..] {
        assert!(call.signature_ok);
        assert_eq!(call.body["message"]["id"], id);
        assert_eq!(call.body["message"]["submitted_by"], bob);
        assert_eq!(call.body["message"]["listener"], "api");
    }

    let view = newest_view(&server, &key, "alice").await;
    assert_eq!(view["submitted_by"], bob);
    assert_eq!(view["tags"], json!(["checked"]));
    let stored = raw(&server, &key, &view).await;
    assert!(
        stored.starts_with("Received: from api (")
            && stored.contains(&format!("(API submission for {bob})")),
        "{stored}"
    );
    assert!(
        !stored.to_ascii_lowercase().contains("x-mairust"),
        "{stored}"
    );

    // What leaves the server carries no key identifier.
    assert!(sink.wait_for(1, Duration::from_secs(10)), "delivered");
    let out = String::from_utf8_lossy(&sink.received()[0].data).into_owned();
    assert!(out.contains("Subject: allowed"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("x-mairust"), "{out}");
    assert!(!out.contains("sender-test"), "the key's name: {out}");
    assert!(!out.contains(&key[..11]), "the key's prefix: {out}");

    // The audit log knows which key sent it, for whom.
    assert!(
        eventually(Duration::from_secs(10), || async {
            !server.audit_file_events("message.send").is_empty()
        })
        .await
    );
    let entry = &server.audit_file_events("message.send")[0];
    assert_eq!(entry["target"], id);
    assert_eq!(entry["details"]["submitted_by"], bob);
    assert!(
        entry["actor"]
            .as_str()
            .unwrap()
            .starts_with("api-key:sender-test#"),
        "{entry}"
    );

    // A message for remote recipients only passes pre_receive too (as over SMTP; the
    // API used to skip it when no recipient was local), and a refusal there ends it.
    let before = receiver.calls().len();
    refused_by_hook(
        &server,
        &key,
        &receiver,
        send(vec!["friend@remote.test"], "remote only"),
        "remote only, still screened",
    )
    .await;
    let calls = receiver.calls();
    let events: Vec<(&str, &str)> = calls[before..]
        .iter()
        .map(|c| (c.hook.as_str(), c.body["event"].as_str().unwrap()))
        .collect();
    assert_eq!(events, [("policy", "pre_receive")]);
    assert_eq!(sink.received().len(), 1, "nothing more left the server");
}

/// `POST /send` counts the message in the node's memory budget for finished bodies, as
/// SMTP does: while a slow pre_receive hook holds one large message (four copies of it
/// counted), a second one finds no room, waits, and is answered 503 instead of piling
/// more bodies into memory; the first is stored once the hook answers.
#[tokio::test]
async fn send_waits_for_the_memory_budget_and_gives_up_with_503() {
    let receiver = HookReceiver::start(SECRET);
    receiver.script(&[Answer {
        delay: Duration::from_secs(14),
        ..Answer::json(json!({"action": "allow"}))
    }]);
    // The least budget the config allows for 40000-byte messages: half of it (103 KiB)
    // holds finished bodies, room for one 15-21 KB message screened by a hook (4
    // copies), not two.
    let server = TestServer::start_with(Options {
        max_message_size: 40000,
        limits_yaml: vec!["max_inflight_data_bytes: 211072".into()],
        extra_yaml: format!(
            "{ALLOW_LOOPBACK}hooks:\n  - id: slow\n    event: pre_receive\n    url: {}\n    secret: {SECRET}\n    timeout_ms: 30000\n",
            receiver.url()
        ),
        ..Options::default()
    });
    let key = cli_key(&server, &["send"]);
    let bob = TestServer::address("bob");
    let alice = TestServer::address("alice");
    let request = |subject: &str| json!({"from": bob, "to": [alice], "subject": subject, "text": "x".repeat(15000)});
    let first = {
        let (server_http, key, body) = (server.http, key.clone(), request("first"));
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{server_http}/api/v1/send"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let held = eventually(Duration::from_secs(10), || async {
        !receiver.calls().is_empty()
    })
    .await;
    assert!(held, "the first message reaches the hook");
    let started = std::time::Instant::now();
    let (s, b) = api(
        &server,
        &key,
        reqwest::Method::POST,
        "/send",
        Some(request("second")),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("busy"),
        "{b}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "it waited for room first"
    );
    assert_eq!(
        receiver.calls().len(),
        1,
        "the second never reached the hook"
    );
    assert_eq!(first.await.unwrap(), StatusCode::ACCEPTED);
    let inbox = server.inbox("alice").await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let hits = server.metrics_text().await;
    assert!(
        hits.lines()
            .any(|l| l == "mairust_limit_hits_total{limit=\"data_memory\"} 1"),
        "{hits}"
    );
}
