//! A raw-bytes SMTP client for malformed input, pipelining and smuggling tests.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One reply: code and the text of all its lines.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub code: u16,
    pub text: String,
}

impl RawClient {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> (RawClient, RawReply) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut c = RawClient {
            stream,
            buf: Vec::new(),
        };
        let greeting = c.reply().await.expect("greeting");
        (c, greeting)
    }

    /// Connects from a chosen loopback source address (127.0.0.N: each N is another
    /// client for per-address limits) and reads the greeting.
    pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> (RawClient, RawReply) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(local, 0)).expect("bind");
        let stream = socket.connect(addr).await.expect("connect");
        let mut c = RawClient {
            stream,
            buf: Vec::new(),
        };
        let greeting = c.reply().await.expect("greeting");
        (c, greeting)
    }

    /// The connection itself, for tests that write without reading.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one complete reply; `None` on EOF.
    pub async fn reply(&mut self) -> Option<RawReply> {
        let mut lines: Vec<String> = Vec::new();
        loop {
            while let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let line = String::from_utf8_lossy(&line[..pos]).into_owned();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    let code = lines[0][..3].parse().expect("reply code");
                    let text = lines
                        .iter()
                        .map(|l| l.get(4..).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Some(RawReply { code, text });
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(15), self.stream.read(&mut chunk))
                .await
                .expect("reply timeout")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command line and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> RawReply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.expect("reply")
    }

    /// Sends a command and asserts the reply code.
    pub async fn expect(&mut self, line: &str, code: u16) -> RawReply {
        let r = self.cmd(line).await;
        assert_eq!(r.code, code, "`{line}` got {} {}", r.code, r.text);
        r
    }

    /// Reads `n` replies (answers to pipelined commands) and returns their codes.
    pub async fn codes(&mut self, n: usize) -> Vec<u16> {
        let mut codes = Vec::with_capacity(n);
        for _ in 0..n {
            codes.push(self.reply().await.expect("reply").code);
        }
        codes
    }

    /// EHLO, MAIL FROM:<s@remote.test>, RCPT TO:<rcpt>, DATA, each expected to succeed.
    pub async fn begin_data(&mut self, rcpt: &str) {
        self.expect("EHLO client.test", 250).await;
        self.expect("MAIL FROM:<s@remote.test>", 250).await;
        self.expect(&format!("RCPT TO:<{rcpt}>"), 250).await;
        self.expect("DATA", 354).await;
    }

    /// True when the server closed the connection.
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}
