//! Send limits of authenticated accounts (`send_limits`): messages and recipients per
//! hour of an account and of its domain, `451 4.7.0` over SMTP and 429 from `POST
//! /send`, a user's own limits set through the API, and — on PostgreSQL — one count
//! shared by two nodes.

mod common;

use common::api::cli_key;
use common::raw::RawClient;
use common::{Options, PASSWORD, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn options() -> Options {
    Options {
        allow_plaintext_auth: true,
        send_limits_yaml: vec![
            "messages_per_hour: 3".into(),
            "recipients_per_hour: 5".into(),
            "domain_messages_per_hour: 6".into(),
        ],
        ..Options::default()
    }
}

async fn login(server: &TestServer, user: &str) -> RawClient {
    use base64::Engine;
    let (mut c, _) = RawClient::connect(server.submission).await;
    c.expect("EHLO client.test", 250).await;
    let plain = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{}\0{PASSWORD}", TestServer::address(user)));
    c.expect(&format!("AUTH PLAIN {plain}"), 235).await;
    c
}

/// One message from `user` to `to` (local users): the reply to the final dot (or the
/// refusal of a recipient).
async fn send(c: &mut RawClient, user: &str, to: &[&str]) -> (u16, String) {
    let from = TestServer::address(user);
    c.expect(&format!("MAIL FROM:<{from}>"), 250).await;
    for rcpt in to {
        c.expect(&format!("RCPT TO:<{}>", TestServer::address(rcpt)), 250)
            .await;
    }
    c.expect("DATA", 354).await;
    c.send(format!("From: <{from}>\r\nSubject: limits\r\n\r\nhello\r\n.\r\n").as_bytes())
        .await;
    let r = c.reply().await.expect("reply to the data");
    (r.code, r.text)
}

#[tokio::test]
async fn accounts_and_domains_are_held_to_their_hourly_limits() {
    let server = TestServer::start_with(options());
    let mut bob = login(&server, "bob").await;
    for _ in 0..3 {
        let (code, text) = send(&mut bob, "bob", &["carol"]).await;
        assert_eq!(code, 250, "{text}");
    }
    let (code, text) = send(&mut bob, "bob", &["carol"]).await;
    assert_eq!(code, 451, "{text}");
    assert!(
        text.contains("4.7.0") && text.contains("3 messages per hour"),
        "{text}"
    );

    // POST /send counts against the same allowance: 429.
    let key = cli_key(&server, &["send", "admin", "read"]);
    let http = reqwest::Client::new();
    let api_send = |from: &str| {
        http.post(format!("http://{}/api/v1/send", server.http))
            .bearer_auth(&key)
            .json(&json!({"from": TestServer::address(from), "to": [TestServer::address("carol")], "subject": "api", "text": "hi"}))
            .send()
    };
    let resp = api_send("bob").await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");

    // Recipients: alice's second message of 3 recipients passes 5.
    let mut alice = login(&server, "alice").await;
    let (code, text) = send(&mut alice, "alice", &["bob", "carol", "alice"]).await;
    assert_eq!(code, 250, "{text}");
    let (code, text) = send(&mut alice, "alice", &["bob", "carol", "alice"]).await;
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("recipients"), "{text}");

    // More recipients in one message than an hour allows: refused for good (550).
    let from = TestServer::address("alice");
    alice.expect("RSET", 250).await;
    alice.expect(&format!("MAIL FROM:<{from}>"), 250).await;
    for i in 0..6 {
        alice
            .expect(&format!("RCPT TO:<friend{i}@remote.test>"), 250)
            .await;
    }
    alice.expect("DATA", 354).await;
    alice
        .send(format!("From: <{from}>\r\nSubject: many\r\n\r\nhello\r\n.\r\n").as_bytes())
        .await;
    let r = alice.reply().await.unwrap();
    assert_eq!(r.code, 550, "{}", r.text);
    assert!(
        r.text.contains("5.7.1") && r.text.contains("more than 5 recipients"),
        "{}",
        r.text
    );

    // The domain: 3 (bob) + 1 (alice) so far; carol's 2 reach 6, her third is over.
    let mut carol = login(&server, "carol").await;
    for _ in 0..2 {
        let (code, text) = send(&mut carol, "carol", &["bob"]).await;
        assert_eq!(code, 250, "{text}");
    }
    let (code, text) = send(&mut carol, "carol", &["bob"]).await;
    assert_eq!(code, 451, "{text}");
    assert!(
        text.contains("example.test") && text.contains("6 messages"),
        "{text}"
    );

    // Bob gets limits of his own through the API: his count is kept, his limit is not.
    let user_url = format!(
        "http://{}/api/v1/users/{}",
        server.http,
        TestServer::address("bob")
    );
    let resp = http
        .patch(&user_url)
        .bearer_auth(&key)
        .json(&json!({"send_limits": {"messages_per_hour": 10, "recipients_per_hour": 100}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(
        view["send_limits"],
        json!({"messages_per_hour": 10, "recipients_per_hour": 100, "own": true})
    );
    // ... but the domain is still full.
    let (code, text) = send(&mut bob, "bob", &["carol"]).await;
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("example.test"), "{text}");
    // Back to the configured limits.
    let resp = http
        .patch(&user_url)
        .bearer_auth(&key)
        .json(&json!({"send_limits": null}))
        .send()
        .await
        .unwrap();
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["send_limits"]["own"], false, "{view}");
    assert_eq!(view["send_limits"]["messages_per_hour"], 3);
    // Only a key of every domain may change limits, within bounds; a PATCH without
    // them leaves them alone.
    let limited = server
        .cli_ok(
            &[
                "admin",
                "create-key",
                "--name",
                "tenant",
                "--scope",
                "admin",
                "--domain",
                "example.test",
            ],
            None,
        )
        .trim()
        .to_string();
    let resp = http
        .patch(&user_url)
        .bearer_auth(&limited)
        .json(&json!({"send_limits": {"messages_per_hour": 0, "recipients_per_hour": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = http
        .patch(&user_url)
        .bearer_auth(&key)
        .json(&json!({"send_limits": {"messages_per_hour": 2_000_000_000_000u64, "recipients_per_hour": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = http
        .patch(&user_url)
        .bearer_auth(&key)
        .json(&json!({"disabled": false}))
        .send()
        .await
        .unwrap();
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["send_limits"]["own"], false, "{view}");
    // A write key may not change limits.
    let write = cli_key(&server, &["write"]);
    let resp = http
        .patch(&user_url)
        .bearer_auth(&write)
        .json(&json!({"send_limits": {"messages_per_hour": 0, "recipients_per_hour": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Mail from other servers is not counted.
    let reply = common::deliver_to_bob(&server, "<outside@remote.test>").await;
    assert_eq!(reply.code, 250);

    let metrics = server.metrics_text().await;
    let hits = |scope: &str, kind: &str| -> f64 {
        let series = format!("mairust_send_limit_hits_total{{kind=\"{kind}\",scope=\"{scope}\"}}");
        common::sample(&metrics, &series)
    };
    assert_eq!(hits("account", "messages"), 2.0);
    assert_eq!(hits("account", "recipients"), 2.0);
    assert_eq!(hits("domain", "messages"), 2.0);
}

/// Two nodes on one PostgreSQL share the count: the allowance is spent on either.
#[tokio::test]
async fn two_nodes_share_one_count() {
    if !common::backend_available(
        common::postgres_url().is_some() && common::s3_endpoint().is_some(),
        "MAIRUST_TEST_POSTGRES_URL and MAIRUST_TEST_S3_ENDPOINT (.ci/run sets both)",
    ) {
        return;
    }
    let a = TestServer::start_with(options());
    let b = a.start_node(options());
    let mut on_a = login(&a, "bob").await;
    let mut on_b = login(&b, "bob").await;
    for i in 0..3 {
        let c = if i == 1 { &mut on_b } else { &mut on_a };
        let (code, text) = send(c, "bob", &["carol"]).await;
        assert_eq!(code, 250, "message {i}: {text}");
    }
    for c in [&mut on_b, &mut on_a] {
        let (code, text) = send(c, "bob", &["carol"]).await;
        assert_eq!(code, 451, "{text}");
    }
    // Many at once from both nodes: nobody passes the limit together.
    let mut alice_a = login(&a, "alice").await;
    let mut alice_b = login(&b, "alice").await;
    let (x, y) = tokio::join!(
        async {
            let mut ok = 0;
            for _ in 0..3 {
                ok += usize::from(send(&mut alice_a, "alice", &["carol"]).await.0 == 250);
            }
            ok
        },
        async {
            let mut ok = 0;
            for _ in 0..3 {
                ok += usize::from(send(&mut alice_b, "alice", &["carol"]).await.0 == 250);
            }
            ok
        }
    );
    assert_eq!(x + y, 3, "exactly the allowance of 3 was taken: {x} + {y}");
}
