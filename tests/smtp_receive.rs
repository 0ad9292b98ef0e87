//! Receiving mail over SMTP into durable storage: the real server on loopback, driven by
//! an SMTP client crate (mail-send) and by raw bytes.

mod common;

use common::raw::RawClient;
use common::{Options, TestServer, message, tls_login};
use mail_send::SmtpClientBuilder;
use mail_send::smtp::message::Message;

async fn send_plain(
    server: &TestServer,
    from: &str,
    to: &[&str],
    body: &str,
) -> mail_send::Result<()> {
    let mut client = SmtpClientBuilder::new("localhost".to_string(), server.inbound.port())
        .unwrap()
        .connect_plain()
        .await?;
    let result = client
        // mail-send always ends the data with CRLF.CRLF: drop the body's own last CRLF.
        .send(Message::new(
            from,
            to.iter().copied(),
            body.strip_suffix("\r\n").unwrap_or(body).as_bytes(),
        ))
        .await;
    client.quit().await.ok();
    result.map(|_| ())
}

#[tokio::test]
async fn delivers_to_one_local_recipient() {
    let server = TestServer::start();
    let bob = TestServer::address("bob");
    let body = message("sender@remote.test", &bob, "one@remote.test", "Hello Bob");
    send_plain(&server, "sender@remote.test", &[&bob], &body)
        .await
        .expect("message accepted");
    let rows = server.messages_with_id("one@remote.test").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.subject.as_deref(), Some("test one@remote.test"));
    assert_eq!(row.envelope_from, "sender@remote.test");
    assert_eq!(row.listener, "inbound");
    assert_eq!(server.index_count(&row.id).await, 1);
    let stored = server.object(&row.object_key).await.expect("object stored");
    assert_eq!(stored.len() as i64, row.size);
    let text = String::from_utf8(stored).unwrap();
    assert!(text.starts_with("Received: from "), "{text}");
    assert!(text.ends_with(&body), "stored body differs");
}

#[tokio::test]
async fn delivers_to_many_local_recipients_with_one_object() {
    let server = TestServer::start();
    let rcpts = ["bob", "alice", "carol"].map(TestServer::address);
    let to: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let body = message(
        "sender@remote.test",
        &rcpts[0],
        "many@remote.test",
        "Hello all",
    );
    send_plain(&server, "sender@remote.test", &to, &body)
        .await
        .expect("message accepted");
    let rows = server.messages_with_id("many@remote.test").await;
    assert_eq!(rows.len(), 1, "stored once");
    assert_eq!(
        server.index_count(&rows[0].id).await,
        3,
        "indexed for each recipient"
    );
}

#[tokio::test]
async fn policy_replies() {
    let server = TestServer::start_with(Options {
        max_recipients: 2,
        ..Options::default()
    });
    let (mut c, greeting) = RawClient::connect(server.inbound).await;
    assert_eq!(greeting.code, 220);
    let ehlo = c.expect("EHLO client.test", 250).await;
    for ext in [
        "PIPELINING",
        "SIZE 1048576",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "STARTTLS",
    ] {
        assert!(ehlo.text.contains(ext), "EHLO lacks {ext}: {}", ehlo.text);
    }
    assert!(
        !ehlo.text.contains("AUTH"),
        "AUTH offered before TLS: {}",
        ehlo.text
    );
    c.expect("MAIL FROM:<s@remote.test>", 250).await;
    let r = c.expect("RCPT TO:<nobody@example.test>", 550).await;
    assert!(r.text.starts_with("5.1.1"), "{}", r.text);
    let r = c.expect("RCPT TO:<victim@elsewhere.test>", 550).await;
    assert!(r.text.starts_with("5.7.1"), "{}", r.text);
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    c.expect("RCPT TO:<alice@example.test>", 250).await;
    let r = c.expect("RCPT TO:<carol@example.test>", 452).await;
    assert!(r.text.starts_with("4.5.3"), "{}", r.text);
    c.expect("RSET", 250).await;
    c.expect("NOOP", 250).await;
    c.expect("VRFY bob", 252).await;
    c.expect("HELP", 214).await;
    c.expect("RCPT TO:<bob@example.test>", 503).await;
    c.expect("DATA", 503).await;
    c.expect("EXPN staff", 502).await;
    c.expect("MAIL FROM:<s@remote.test> FOO=BAR", 555).await;
    c.expect("QUIT", 221).await;
    assert!(c.closed().await);
}

/// Account changes made by another process (the CLI) count at the very next RCPT, in
/// the same session: nothing answers from what it saw before.
#[tokio::test]
async fn the_next_rcpt_sees_account_changes_of_the_cli() {
    let server = TestServer::start();
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<s@remote.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    server.cli_ok(&["user", "disable", "bob@example.test"], None);
    let r = c.expect("RCPT TO:<bob@example.test>", 550).await;
    assert!(r.text.starts_with("5.1.1"), "{}", r.text);
    server.cli_ok(&["user", "enable", "bob@example.test"], None);
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    server.cli_ok(&["user", "remove", "bob@example.test"], None);
    let r = c.expect("RCPT TO:<bob@example.test>", 550).await;
    assert!(r.text.starts_with("5.1.1"), "{}", r.text);
    server.cli_ok(
        &["user", "add", "dave@example.test", "--password-stdin"],
        Some("pw\n"),
    );
    c.expect("RCPT TO:<dave@example.test>", 250).await;
    c.expect("RCPT TO:<x@fresh.test>", 550).await;
    server.cli_ok(&["domain", "add", "fresh.test"], None);
    let r = c.expect("RCPT TO:<x@fresh.test>", 550).await;
    assert!(
        r.text.starts_with("5.1.1"),
        "a new local domain: {}",
        r.text
    );
    c.expect("QUIT", 221).await;
}

#[tokio::test]
async fn size_limit_gives_552() {
    let server = TestServer::start_with(Options {
        max_message_size: 2000,
        ..Options::default()
    });
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    // Declared too big.
    let r = c.expect("MAIL FROM:<s@remote.test> SIZE=5000", 552).await;
    assert!(r.text.starts_with("5.3.4"), "{}", r.text);
    // Not declared, but too big in fact.
    c.expect("MAIL FROM:<s@remote.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    c.expect("DATA", 354).await;
    // Three lines of 990 bytes: valid lines, 2,970 bytes over a 2,000-byte limit.
    let line = format!("{}\r\n", "x".repeat(988));
    let big = format!(
        "Subject: big\r\nMessage-ID: <big@remote.test>\r\n\r\n{}.\r\n",
        line.repeat(3)
    );
    c.send(big.as_bytes()).await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.code, 552, "{}", r.text);
    assert!(server.messages_with_id("big@remote.test").await.is_empty());
    // The session goes on.
    c.expect("MAIL FROM:<s@remote.test>", 250).await;
}

#[tokio::test]
async fn starttls_then_auth_then_send() {
    let server = TestServer::start();
    let bob = TestServer::address("bob");
    let mut client = tls_login(server.submission.port(), false, &bob, common::PASSWORD)
        .await
        .expect("STARTTLS and AUTH");
    let body = message(
        &bob,
        &TestServer::address("alice"),
        "tls@example.test",
        "over TLS",
    );
    client
        .send(Message::new(
            bob.as_str(),
            [TestServer::address("alice").as_str()],
            body.as_bytes(),
        ))
        .await
        .expect("sent");
    client.quit().await.ok();
    let rows = server.messages_with_id("tls@example.test").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].listener, "submission");
    let stored = String::from_utf8(server.object(&rows[0].object_key).await.unwrap()).unwrap();
    assert!(stored.contains("with ESMTPSA"), "{stored}");
}

#[tokio::test]
async fn wrong_password_and_foreign_sender_are_refused() {
    let server = TestServer::start();
    let bob = TestServer::address("bob");
    let bad = tls_login(server.submission.port(), false, &bob, "wrong password").await;
    assert!(bad.is_err(), "wrong password accepted");
    let mut client = tls_login(server.submission.port(), false, &bob, common::PASSWORD)
        .await
        .expect("login");
    let alice = TestServer::address("alice");
    let err = client
        .send(Message::new(
            alice.as_str(),
            [alice.as_str()],
            b"Subject: x\r\n\r\nx\r\n".as_slice(),
        ))
        .await
        .expect_err("sent as someone else");
    assert!(err.to_string().contains("553"), "{err}");
}

#[tokio::test]
async fn auth_before_tls_is_refused() {
    let server = TestServer::start();
    let (mut c, _) = RawClient::connect(server.submission).await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(!ehlo.text.contains("AUTH"));
    let r = c
        .expect("AUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAY29ycmVjdA==", 538)
        .await;
    assert!(r.text.starts_with("5.7.11"), "{}", r.text);
    // Submission without AUTH: 530.
    let r = c.expect("MAIL FROM:<bob@example.test>", 530).await;
    assert!(r.text.starts_with("5.7.0"), "{}", r.text);
}

#[tokio::test]
async fn plaintext_auth_when_allowed() {
    let server = TestServer::start_with(Options {
        allow_plaintext_auth: true,
        ..Options::default()
    });
    let (mut c, _) = RawClient::connect(server.submission).await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"), "{}", ehlo.text);
    let b64 = common::base64;
    c.expect("AUTH LOGIN", 334).await;
    c.expect(&b64("bob@example.test"), 334).await;
    c.expect(&b64(common::PASSWORD), 235).await;
    c.expect("MAIL FROM:<bob@example.test>", 250).await;
}

#[tokio::test]
async fn pipelined_transaction() {
    let server = TestServer::start();
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    c.send(
        b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(c.codes(5).await, [250, 250, 550, 250, 354]);
    // Body, end, next transaction and QUIT in one write.
    c.send(
        b"Subject: p1\r\nMessage-ID: <p1@remote.test>\r\n\r\nfirst\r\n.\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(c.codes(4).await, [250, 250, 250, 354]);
    c.send(b"Subject: p2\r\nMessage-ID: <p2@remote.test>\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
        .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.reply().await.unwrap().code, 221);
    let p1 = server.messages_with_id("p1@remote.test").await;
    assert_eq!(p1.len(), 1);
    assert_eq!(server.index_count(&p1[0].id).await, 2);
    assert_eq!(server.messages_with_id("p2@remote.test").await.len(), 1);
}

#[tokio::test]
async fn smuggling_attempts_do_not_end_data() {
    let server = TestServer::start();
    for (n, smuggle) in [&b"\n.\n"[..], b"\n.\r\n", b"\r.\r\n", b"\r\n.\n"]
        .iter()
        .enumerate()
    {
        let (mut c, _) = RawClient::connect(server.inbound).await;
        c.begin_data("bob@example.test").await;
        let mut data = format!("Subject: outer\r\nMessage-ID: <outer{n}@remote.test>\r\n\r\nhello")
            .into_bytes();
        data.extend_from_slice(smuggle);
        data.extend_from_slice(
            format!("MAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: smuggled\r\nMessage-ID: <smuggled{n}@remote.test>\r\n\r\nsmuggled\r\n")
                .as_bytes(),
        );
        c.send(&data).await;
        // Nothing may answer yet: the smuggled commands are still message content.
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), c.reply()).await;
        assert!(
            early.is_err(),
            "variant {n}: server answered inside DATA: {early:?}"
        );
        c.send(b".\r\n").await;
        let r = c.reply().await.unwrap();
        assert_eq!(r.code, 550, "variant {n}: {} {}", r.code, r.text);
        assert!(r.text.starts_with("5.6.0"), "{}", r.text);
        c.expect("QUIT", 221).await;
        assert!(
            server
                .messages_with_id(&format!("smuggled{n}@remote.test"))
                .await
                .is_empty()
        );
        assert!(
            server
                .messages_with_id(&format!("outer{n}@remote.test"))
                .await
                .is_empty()
        );
    }
}

#[tokio::test]
async fn malformed_input_gets_errors_and_others_are_served() {
    let server = TestServer::start_with(Options {
        max_bad_commands: 5,
        ..Options::default()
    });
    let (mut bad, _) = RawClient::connect(server.inbound).await;
    bad.send(b"EHLO\0evil\r\n").await;
    assert_eq!(bad.reply().await.unwrap().code, 500);
    bad.send(format!("NOOP {}\r\n", "A".repeat(10_000)).as_bytes())
        .await;
    let r = bad.reply().await.unwrap();
    assert_eq!(r.code, 500);
    assert!(r.text.contains("too long"), "{}", r.text);
    bad.send(b"NOOP\n").await;
    assert_eq!(bad.reply().await.unwrap().code, 500);
    bad.send(&[0xff, 0xfe, 0xfd, b'\r', b'\n']).await;
    assert_eq!(bad.reply().await.unwrap().code, 500);

    // Meanwhile another client is served normally.
    let bob = TestServer::address("bob");
    let body = message("s@remote.test", &bob, "served@remote.test", "still here");
    send_plain(&server, "s@remote.test", &[&bob], &body)
        .await
        .expect("served");

    // The fifth error closes the bad session with 421.
    bad.send(b"GARBAGE\r\n").await;
    assert_eq!(bad.reply().await.unwrap().code, 500);
    assert_eq!(bad.reply().await.unwrap().code, 421);
    assert!(bad.closed().await);

    // NUL inside DATA refuses the message only.
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.begin_data("bob@example.test").await;
    c.send(b"Subject: nul\r\n\r\na\0b\r\n.\r\n").await;
    assert_eq!(c.reply().await.unwrap().code, 550);
    c.expect("NOOP", 250).await;
    assert_eq!(server.messages_with_id("served@remote.test").await.len(), 1);
}

#[tokio::test]
async fn unterminated_data_stores_nothing() {
    let server = TestServer::start();
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.begin_data("bob@example.test").await;
    c.send(b"Subject: cut\r\nMessage-ID: <cut@remote.test>\r\n\r\nhalf a messa")
        .await;
    drop(c);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(server.messages_with_id("cut@remote.test").await.is_empty());
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
}

#[tokio::test]
async fn per_ip_session_limit_gives_421() {
    let server = TestServer::start_with(Options {
        max_sessions_per_ip: 2,
        ..Options::default()
    });
    let (_a, _) = RawClient::connect(server.inbound).await;
    let (_b, _) = RawClient::connect(server.inbound).await;
    let (_c, greeting) = RawClient::connect(server.inbound).await;
    assert_eq!(greeting.code, 421);
    assert!(greeting.text.starts_with("4.7.0"), "{}", greeting.text);
}

#[tokio::test]
async fn health_endpoints() {
    let server = TestServer::start();
    let (status, body) = server.http_get("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["checks"]["database"]["status"], "healthy");
    assert!(body["checks"]["database"]["latency_ms"].is_u64());
    assert_eq!(body["checks"]["storage"]["status"], "healthy");
    let (status, body) = server.http_get("/health/live").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));
    let (status, _) = server.http_get("/health").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn implicit_tls_submissions() {
    let server = TestServer::start_with(Options {
        submissions: true,
        ..Options::default()
    });
    let bob = TestServer::address("bob");
    let mut client = tls_login(server.submissions.port(), true, &bob, common::PASSWORD)
        .await
        .expect("implicit TLS and AUTH");
    let body = message(&bob, &bob, "implicit@example.test", "over port 465");
    client
        .send(Message::new(
            bob.as_str(),
            [bob.as_str()],
            body.trim_end().as_bytes(),
        ))
        .await
        .expect("sent");
    client.quit().await.ok();
    let rows = server.messages_with_id("implicit@example.test").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].listener, "submissions");
}

#[tokio::test]
async fn idle_client_gets_421_after_the_command_timeout() {
    let server = TestServer::start_with(Options {
        command_timeout_seconds: 1,
        ..Options::default()
    });
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    let start = std::time::Instant::now();
    let r = c.reply().await.expect("421 on timeout");
    assert_eq!(r.code, 421, "{}", r.text);
    assert!(r.text.starts_with("4.4.2"), "{}", r.text);
    assert!(start.elapsed() >= std::time::Duration::from_millis(900));
    assert!(c.closed().await);
}
