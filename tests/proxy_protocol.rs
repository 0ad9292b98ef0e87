//! PROXY protocol on the SMTP listeners, behind a real HAProxy (issue 17): the client
//! a trusted proxy names is the session's client (Received header, per-address
//! session limits); a header from anyone else is refused; a trusted proxy that sends
//! none, or garbage, is cut off.
//!
//! Loopback addresses stand for hosts: HAProxy connects to the nodes from 127.0.0.9
//! (the only trusted address), clients connect from 127.0.0.N of their own.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::haproxy::{Frontend, Haproxy};
use common::raw::RawClient;
use common::{Options, TestServer, message};
use tokio::io::AsyncWriteExt;

const PROXY_SOURCE: &str = "127.0.0.9";

fn node() -> TestServer {
    TestServer::start_with(Options {
        max_sessions_per_ip: 2,
        inbound_yaml: vec![
            "proxy_protocol:".into(),
            format!("  trusted: [{PROXY_SOURCE}/32]"),
            "  timeout_seconds: 1".into(),
        ],
        ..Options::default()
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Sends one message from `client` through `via` and returns the final reply code.
async fn send_from(client: &str, via: SocketAddr, message_id: &str) -> u16 {
    let (mut c, greeting) = RawClient::connect_from(ip(client), via).await;
    assert_eq!(greeting.code, 220, "{}", greeting.text);
    c.expect("EHLO client.remote.test", 250).await;
    c.expect("MAIL FROM:<sender@remote.test>", 250).await;
    c.expect("RCPT TO:<bob@example.test>", 250).await;
    c.expect("DATA", 354).await;
    c.send(
        message(
            "sender@remote.test",
            "bob@example.test",
            message_id,
            "via a proxy",
        )
        .as_bytes(),
    )
    .await;
    c.send(b".\r\n").await;
    let code = c.reply().await.unwrap().code;
    c.expect("QUIT", 221).await;
    code
}

/// The Received header our node added on top of the stored message.
async fn received(server: &TestServer, message_id: &str) -> String {
    let rows = server.messages_with_id(message_id).await;
    assert_eq!(rows.len(), 1, "{message_id} stored {} times", rows.len());
    let body = server.object(&rows[0].object_key).await.expect("body");
    let text = String::from_utf8_lossy(&body).into_owned();
    let unfolded = text.replace("\r\n\t", " ").replace("\r\n ", " ");
    unfolded
        .lines()
        .find(|l| l.starts_with("Received:"))
        .unwrap_or_else(|| panic!("no Received header in {text}"))
        .to_string()
}

#[tokio::test]
async fn haproxy_v2_in_front_of_two_nodes_names_the_real_client() {
    let (a, b) = (node(), node());
    let Some(haproxy) = Haproxy::start(
        PROXY_SOURCE,
        &[Frontend {
            version: 2,
            backends: vec![a.inbound, b.inbound],
        }],
    ) else {
        return;
    };
    let front = haproxy.frontends[0];
    // Round robin over the two nodes: each gets some. The exact split is HAProxy's (a
    // 3/1 split was seen once in CI, cause not known), and not what this test is about.
    for n in 0..4 {
        assert_eq!(
            send_from("127.0.0.5", front, &format!("v2-{n}@remote.test")).await,
            250
        );
    }
    let mut per_node = [0, 0];
    for n in 0..4 {
        let id = format!("v2-{n}@remote.test");
        for (i, server) in [&a, &b].into_iter().enumerate() {
            if server.messages_with_id(&id).await.is_empty() {
                continue;
            }
            per_node[i] += 1;
            let line = received(server, &id).await;
            assert!(line.contains("127.0.0.5"), "real client missing: {line}");
            assert!(
                !line.contains(PROXY_SOURCE),
                "proxy's address recorded: {line}"
            );
        }
    }
    assert_eq!(
        per_node[0] + per_node[1],
        4,
        "each message on one node: {per_node:?}"
    );
    assert!(
        per_node.iter().all(|&n| n >= 1),
        "both nodes behind the proxy served: {per_node:?}"
    );
}

#[tokio::test]
async fn haproxy_v1_client_counted_against_its_own_address() {
    let a = node();
    let Some(haproxy) = Haproxy::start(
        PROXY_SOURCE,
        &[Frontend {
            version: 1,
            backends: vec![a.inbound],
        }],
    ) else {
        return;
    };
    let front = haproxy.frontends[0];
    assert_eq!(send_from("127.0.0.6", front, "v1@remote.test").await, 250);
    assert!(received(&a, "v1@remote.test").await.contains("127.0.0.6"));

    // Every connection reaches the node from HAProxy's one address, yet the limit of 2
    // sessions per address applies to each client apart.
    let (mut first, g1) = RawClient::connect_from(ip("127.0.0.6"), front).await;
    let (mut second, g2) = RawClient::connect_from(ip("127.0.0.6"), front).await;
    assert_eq!((g1.code, g2.code), (220, 220));
    let (_, third) = RawClient::connect_from(ip("127.0.0.6"), front).await;
    assert_eq!(third.code, 421, "{}", third.text);
    assert!(third.text.starts_with("4.7.0"), "{}", third.text);
    let (mut other, g) = RawClient::connect_from(ip("127.0.0.7"), front).await;
    assert_eq!(g.code, 220, "another client is not limited: {}", g.text);
    other.expect("QUIT", 221).await;
    first.expect("QUIT", 221).await;
    second.expect("QUIT", 221).await;
}

#[tokio::test]
async fn untrusted_proxy_headers_are_refused_direct_clients_served() {
    let a = node();
    // A direct client on the same listener is served as itself.
    assert_eq!(
        send_from("127.0.0.5", a.inbound, "direct@remote.test").await,
        250
    );
    assert!(
        received(&a, "direct@remote.test")
            .await
            .contains("127.0.0.5")
    );

    // A v1 header from an address that is not a trusted proxy.
    let (mut c, greeting) = RawClient::connect_from(ip("127.0.0.5"), a.inbound).await;
    assert_eq!(greeting.code, 220);
    c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\nEHLO spoof.test\r\n")
        .await;
    let r = c.reply().await.expect("a refusal");
    assert_eq!(r.code, 550, "{}", r.text);
    assert!(r.text.contains("PROXY header refused"), "{}", r.text);
    assert!(c.closed().await, "session not closed");

    // A v2 header likewise.
    let (mut c, _) = RawClient::connect_from(ip("127.0.0.5"), a.inbound).await;
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&[203, 0, 113, 7, 127, 0, 0, 1, 0x9c, 0x40, 0, 25]);
    c.send(&header).await;
    let r = c.reply().await.expect("a refusal");
    assert_eq!(r.code, 550, "{}", r.text);
    assert!(c.closed().await, "session not closed");
    assert!(
        logged(&a, "proxy_header_refused").await,
        "no proxy_header_refused in the log"
    );
}

#[tokio::test]
async fn trusted_proxy_without_a_valid_header_is_cut_off() {
    let a = node();
    let source: SocketAddr = format!("{PROXY_SOURCE}:0").parse().unwrap();
    let connect = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(source).unwrap();
        socket.connect(a.inbound).await.unwrap()
    };
    // Plain SMTP from the proxy's address: no greeting, the connection is closed.
    let mut stream = connect().await;
    stream
        .write_all(b"EHLO not-a-header.test\r\n")
        .await
        .unwrap();
    assert!(
        read_to_end(&mut stream).await.is_empty(),
        "served without a header"
    );
    // Silence: closed after proxy_protocol.timeout_seconds (1 s).
    let started = std::time::Instant::now();
    let mut stream = connect().await;
    assert!(read_to_end(&mut stream).await.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
    assert!(
        logged(&a, "proxy_header_invalid").await,
        "no proxy_header_invalid in the log"
    );
    assert!(
        logged(&a, "proxy_header_timeout").await,
        "no proxy_header_timeout in the log"
    );
    // The listener still serves others.
    assert_eq!(
        send_from("127.0.0.5", a.inbound, "after@remote.test").await,
        250
    );
}

async fn logged(server: &TestServer, event: &str) -> bool {
    common::eventually(Duration::from_secs(5), || async {
        server.log_contains(event)
    })
    .await
}

/// Everything the peer sends until it closes (bounded at 10 s).
async fn read_to_end(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the connection was not closed")
        .ok();
    out
}

/// Connections from a trusted address that never send their header are bounded: no
/// more of them wait than sessions may exist (`max_sessions`); the next is closed at
/// once and counted (`mairust_limit_hits_total{limit="proxy_pending"}`), and the slots
/// come back when the waits time out.
#[tokio::test]
async fn header_waits_are_bounded_by_max_sessions() {
    let a = TestServer::start_with(Options {
        limits_yaml: vec!["max_sessions: 2".into()],
        inbound_yaml: vec![
            "proxy_protocol:".into(),
            format!("  trusted: [{PROXY_SOURCE}/32]"),
            "  timeout_seconds: 2".into(),
        ],
        ..Options::default()
    });
    let source: SocketAddr = format!("{PROXY_SOURCE}:0").parse().unwrap();
    let connect = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(source).unwrap();
        socket.connect(a.inbound).await.unwrap()
    };
    let _first = connect().await;
    let _second = connect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let mut third = connect().await;
    assert!(read_to_end(&mut third).await.is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the third wait was not refused at once: {:?}",
        started.elapsed()
    );
    let metrics = a.metrics_text().await;
    assert_eq!(
        common::sample(
            &metrics,
            "mairust_limit_hits_total{limit=\"proxy_pending\"}"
        ),
        1.0
    );
    // The two waits time out (2 s); then a header-carrying connection is served.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut stream = connect().await;
    stream
        .write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n")
        .await
        .unwrap();
    use tokio::io::AsyncReadExt;
    let mut greeting = [0u8; 3];
    stream.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220");
}
