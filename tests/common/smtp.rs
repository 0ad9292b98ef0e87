//! Speaking SMTP to a [`TestServer`]: test messages, delivering one over the inbound
//! listener, and a logged-in client over TLS.

use super::{TestServer, raw};

/// One message from a@remote.test to bob over the inbound listener; the reply to the
/// final dot.
pub async fn deliver_to_bob(server: &TestServer, message_id: &str) -> raw::RawReply {
    deliver_to(server, &TestServer::address("bob"), message_id).await
}

/// One message from a@remote.test to the local address `to` over the inbound listener;
/// the reply to the final dot.
pub async fn deliver_to(server: &TestServer, to: &str, message_id: &str) -> raw::RawReply {
    let (mut c, _) = raw::RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@remote.test>", 250).await;
    c.expect(&format!("RCPT TO:<{to}>"), 250).await;
    c.expect("DATA", 354).await;
    let body = message("a@remote.test", to, message_id, "hi");
    c.send(format!("{body}.\r\n").as_bytes()).await;
    c.reply().await.expect("reply to the data")
}

/// A small RFC 5322 message with a unique Message-ID.
pub fn message(from: &str, to: &str, message_id: &str, body: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: test {message_id}\r\nMessage-ID: <{message_id}>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
}

/// STARTTLS (or implicit TLS) and AUTH with a self-signed server certificate.
pub async fn tls_login(
    port: u16,
    implicit: bool,
    user: &str,
    password: &str,
) -> mail_send::Result<
    mail_send::SmtpClient<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>,
> {
    mail_send::SmtpClientBuilder::new("localhost".to_string(), port)
        .unwrap()
        .implicit_tls(implicit)
        .allow_invalid_certs()
        .credentials((user.to_string(), password.to_string()))
        .connect()
        .await
}

/// Standard base64, for SASL exchanges in raw tests.
pub fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
