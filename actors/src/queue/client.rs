//! Outbound SMTP over mail-send's client: connect to the first host that answers,
//! EHLO, STARTTLS when offered, then one mail transaction per message over the same
//! connection, MAIL and RCPTs pipelined when the server allows (RFC 2920), with a
//! result for every recipient.

use std::net::SocketAddr;
use std::time::Duration;

use mail_send::SmtpClient;
use smtp_proto::{EXT_8BIT_MIME, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS, Response};
use tokio_rustls::TlsConnector;

use super::reply::{self, EnhancedStatus, RemoteReply, code};
use super::route::Hop;
use crate::config::OutboundTls;
use crate::net::BoxStream;
use crate::proto::text::sanitize;

/// The server's reply as the queue records it. The enhanced status counts against
/// `proto::text`'s limit with the text, as in the recorded form.
fn reply_of(r: &Response<String>) -> RemoteReply {
    let status = (r.esc[0] > 0).then(|| EnhancedStatus::from(r.esc));
    let prefix = status.map(|s| format!("{s} ")).unwrap_or_default();
    let mut text = sanitize(&format!("{prefix}{}", r.message));
    text.drain(..prefix.len());
    RemoteReply::new(r.code, status, text)
}

/// The connection failed or broke: nothing is known about the transaction in progress.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConnectionError(pub String);

impl From<mail_send::Error> for ConnectionError {
    fn from(e: mail_send::Error) -> Self {
        ConnectionError(sanitize(&e.to_string()))
    }
}

/// Settings for outbound connections.
#[derive(Clone)]
pub struct ClientSettings {
    pub helo_name: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub tls: OutboundTls,
    pub tls_connector: TlsConnector,
}

impl ClientSettings {
    pub fn new(config: &crate::config::Config) -> Result<Self, String> {
        let d = &config.delivery;
        // Opportunistic TLS between MTAs does not authenticate the peer (RFC 7435):
        // encryption against passive listeners, never a reason to fall back to nothing.
        let tls_connector = mail_send::smtp::tls::build_tls_connector(true)?;
        Ok(ClientSettings {
            helo_name: d
                .helo_name
                .clone()
                .unwrap_or_else(|| config.server.hostname.clone()),
            connect_timeout: Duration::from_secs_f64(d.connect_timeout_seconds),
            command_timeout: Duration::from_secs_f64(d.command_timeout_seconds),
            tls: d.tls,
            tls_connector,
        })
    }
}

/// What the server did with one message.
#[derive(Debug, Clone)]
pub struct TransactionResult {
    /// One per recipient, in the order given: the RCPT reply if it was refused, else
    /// the final reply to the message.
    pub recipients: Vec<RemoteReply>,
}

/// One open SMTP connection to one host.
pub struct Connection {
    client: SmtpClient<BoxStream>,
    pub host: String,
    pub tls: bool,
    capabilities: u32,
    max_size: usize,
    dirty: bool,
}

impl Connection {
    /// Tries the hops in order; the first that greets and accepts EHLO wins. The error
    /// of the last hop tried is returned when none does.
    pub async fn open(
        hops: &[Hop],
        settings: &ClientSettings,
    ) -> Result<Connection, ConnectionError> {
        let mut last = ConnectionError("no host to connect to".into());
        for hop in hops {
            let mut use_tls = settings.tls == OutboundTls::Opportunistic;
            loop {
                match Self::open_one(hop, settings, use_tls).await {
                    Ok(c) => return Ok(c),
                    // A server whose TLS we cannot use still gets the mail in plain
                    // text, as opportunistic TLS intends (RFC 7435 §4.2).
                    Err((e, true)) if use_tls => {
                        tracing::info!(component = "queue", host = %hop.name, addr = %hop.addr, error = %e, "STARTTLS failed, retrying without TLS");
                        use_tls = false;
                    }
                    Err((e, _)) => {
                        tracing::debug!(component = "queue", host = %hop.name, addr = %hop.addr, error = %e, "host failed");
                        last = ConnectionError(format!("{} [{}]: {}", hop.name, hop.addr, e.0));
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// The bool in the error says whether it happened during STARTTLS.
    async fn open_one(
        hop: &Hop,
        settings: &ClientSettings,
        use_tls: bool,
    ) -> Result<Connection, (ConnectionError, bool)> {
        let plain = |e: ConnectionError| (e, false);
        let mut client = SmtpClient::connect(hop.addr, settings.connect_timeout)
            .await
            .map_err(|e| plain(e.into()))?;
        // Commands and data are written in pieces and flushed once (see `boxed`): no
        // Nagle delay waiting for the peer's delayed ACK after each flush.
        client
            .stream
            .set_nodelay(true)
            .map_err(|e| plain(ConnectionError(e.to_string())))?;
        client.timeout = settings.command_timeout;
        let greeting = tokio::time::timeout(settings.command_timeout, client.read())
            .await
            .map_err(|_| plain(ConnectionError("timeout waiting for the greeting".into())))?
            .map_err(|e| plain(e.into()))?;
        if greeting.code != code::SERVICE_READY {
            return Err(plain(ConnectionError(format!(
                "greeting: {}",
                reply_of(&greeting)
            ))));
        }
        let ehlo = client
            .ehlo(&settings.helo_name)
            .await
            .map_err(|e| plain(e.into()))?;
        let (client, capabilities, max_size, tls): (SmtpClient<BoxStream>, u32, usize, bool) =
            if use_tls && ehlo.has_capability(EXT_START_TLS) {
                let tls_name = tls_name(&hop.name, hop.addr);
                let mut client = client
                    .start_tls(&settings.tls_connector, &tls_name)
                    .await
                    .map_err(|e| (e.into(), true))?;
                let ehlo = client
                    .ehlo(&settings.helo_name)
                    .await
                    .map_err(|e| (e.into(), true))?;
                (boxed(client), ehlo.capabilities, ehlo.size, true)
            } else {
                (boxed(client), ehlo.capabilities, ehlo.size, false)
            };
        Ok(Connection {
            client,
            host: hop.name.clone(),
            tls,
            capabilities,
            max_size,
            dirty: false,
        })
    }

    fn has(&self, capability: u32) -> bool {
        self.capabilities & capability != 0
    }

    /// One mail transaction. `Err` means the connection is gone and the outcome of
    /// this message unknown; it must not be reused.
    pub async fn send(
        &mut self,
        from: &str,
        recipients: &[&str],
        body: &[u8],
    ) -> Result<TransactionResult, ConnectionError> {
        if self.dirty {
            self.client.rset().await?;
            self.dirty = false;
        }
        let refuse_all = |reply: RemoteReply| TransactionResult {
            recipients: vec![reply; recipients.len()],
        };
        if self.max_size > 0 && body.len() > self.max_size {
            return Ok(refuse_all(reply::too_big(body.len(), self.max_size)));
        }
        let utf8 = !from.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
        if utf8 && !self.has(EXT_SMTP_UTF8) {
            return Ok(refuse_all(reply::smtputf8_unsupported()));
        }
        let mut params = String::new();
        if self.has(EXT_SIZE) {
            params.push_str(&format!(" SIZE={}", body.len()));
        }
        if self.has(EXT_8BIT_MIME) && !body.is_ascii() {
            params.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            params.push_str(" SMTPUTF8");
        }
        let mut commands = Vec::with_capacity(recipients.len() + 1);
        commands.push(format!("MAIL FROM:<{from}>{params}\r\n"));
        commands.extend(recipients.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
        let replies: Vec<RemoteReply> = if self.has(EXT_PIPELINING) {
            self.client
                .cmds(commands.iter())
                .await?
                .iter()
                .map(reply_of)
                .collect()
        } else {
            let mut replies = Vec::with_capacity(commands.len());
            for command in &commands {
                let reply = reply_of(&self.client.cmd(command).await?);
                let refused_mail = replies.is_empty() && !reply.is_positive();
                replies.push(reply);
                if refused_mail {
                    break;
                }
            }
            replies
        };
        self.dirty = true;
        let mail = &replies[0];
        if !mail.is_positive() {
            return Ok(refuse_all(mail.clone()));
        }
        let rcpt_replies = &replies[1..];
        if rcpt_replies.len() != recipients.len() {
            return Err(ConnectionError("missing RCPT replies".into()));
        }
        if !rcpt_replies.iter().any(RemoteReply::is_positive) {
            return Ok(TransactionResult {
                recipients: rcpt_replies.to_vec(),
            });
        }
        let go_ahead = reply_of(&self.client.cmd(b"DATA\r\n").await?);
        let final_reply = if go_ahead.code != code::START_MAIL_INPUT {
            // The transaction is still open on the server: RSET before the next one.
            go_ahead
        } else {
            // mail-send ends the data with CRLF.CRLF: a body that ends in CRLF already
            // gives up its own, or the message would grow a blank line.
            let data = body.strip_suffix(b"\r\n").unwrap_or(body);
            let timeout = self.client.timeout;
            let reply = tokio::time::timeout(timeout, async {
                self.client.write_message(data).await?;
                self.client.read().await
            })
            .await
            .map_err(|_| ConnectionError("timeout sending the message".into()))??;
            // The final reply ends the transaction, whatever it says.
            self.dirty = false;
            reply_of(&reply)
        };
        Ok(TransactionResult {
            recipients: rcpt_replies
                .iter()
                .map(|r| {
                    if r.is_positive() {
                        final_reply.clone()
                    } else {
                        r.clone()
                    }
                })
                .collect(),
        })
    }

    pub async fn quit(self) {
        let _ = self.client.quit().await;
    }
}

/// The connection behind a buffer: mail-send writes a command or a body in several
/// pieces and flushes once, so each flush is one write to the socket (one TLS record).
fn boxed<T>(client: SmtpClient<T>) -> SmtpClient<BoxStream>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    SmtpClient {
        stream: Box::new(tokio::io::BufStream::new(client.stream)),
        timeout: client.timeout,
    }
}

/// The name for SNI: the host name, or the address when the route was an IP.
fn tls_name(host: &str, addr: SocketAddr) -> String {
    if host.is_empty() {
        addr.ip().to_string()
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::text::MAX_TEXT;

    #[test]
    fn replies_keep_the_enhanced_status_apart_within_the_text_budget() {
        let response = |esc: [u8; 3], message: &str| Response {
            code: 550,
            esc,
            message: message.to_string(),
        };
        let reply = reply_of(&response([5, 1, 1], "no such\0user"));
        assert_eq!(reply.status, Some(EnhancedStatus::new(5, 1, 1)));
        assert_eq!(reply.to_string(), "550 5.1.1 no such user");
        assert_eq!(reply_of(&response([0, 0, 0], "no")).to_string(), "550 no");
        let long = reply_of(&response([5, 1, 10], &"x".repeat(2 * MAX_TEXT)));
        assert_eq!(long.to_string().len(), "550 ".len() + MAX_TEXT);
    }
}
