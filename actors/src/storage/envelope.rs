//! A received message ready to be stored: body, envelope, and header fields parsed with
//! mail-parser (SPEC M5). Parsing happens in the session, on its own thread, so the
//! StorageActor only does I/O.

use std::net::IpAddr;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use mail_parser::MessageParser;
use sha2::{Digest, Sha256};

use crate::accounts::LocalRecipient;
use crate::proto::command::Address;

/// Header fields indexed in the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageMeta {
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub date: Option<DateTime<FixedOffset>>,
    pub attachments: i32,
}

impl MessageMeta {
    /// Parses the headers; a message mail-parser cannot read is still stored, unindexed.
    pub fn parse(raw: &[u8]) -> MessageMeta {
        let Some(msg) = MessageParser::default().parse(raw) else {
            return MessageMeta::default();
        };
        let list = |a: Option<&mail_parser::Address>| {
            a.map(|a| {
                a.iter()
                    .filter_map(|addr| addr.address())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
        };
        MessageMeta {
            message_id: msg.message_id().map(str::to_string),
            subject: msg.subject().map(str::to_string),
            from: list(msg.from()),
            to: list(msg.to()),
            date: msg
                .date()
                .and_then(|d| DateTime::parse_from_rfc3339(&d.to_rfc3339()).ok()),
            attachments: msg.attachment_count() as i32,
        }
    }
}

/// One message for the StorageActor: stored once, indexed in every local recipient's
/// INBOX, queued for the remote ones.
#[derive(Debug, Clone)]
pub struct IncomingMessage {
    /// UUIDv7; also names the object.
    pub id: String,
    /// Where the body goes in the object store (see [`object_key`]).
    pub object_key: String,
    /// The bytes as stored: our Received header followed by what the client sent.
    pub body: Bytes,
    pub sha256: String,
    pub meta: MessageMeta,
    /// Reverse-path, empty for `<>`.
    pub envelope_from: String,
    pub recipients: Vec<LocalRecipient>,
    /// Remote recipients: the message also enters the outbound queue (SPEC M6).
    pub outbound: Vec<Address>,
    /// Tags for the mailbox entries (from pre_receive hooks).
    pub tags: Vec<String>,
    pub listener: &'static str,
    pub remote_ip: IpAddr,
    /// The account that submitted it (SMTP AUTH, or `POST /send`'s sender); `None` for
    /// mail from other servers. Set by the caller after [`IncomingMessage::new`].
    pub submitted_by: Option<String>,
    /// The checks of mail from other servers, as JSON (`sender_auth::Summary`).
    pub authentication: Option<String>,
    /// What rspamd said, as JSON (`spam::Report`).
    pub spam: Option<String>,
}

impl IncomingMessage {
    pub fn new(
        id: String,
        body: Vec<u8>,
        envelope_from: String,
        recipients: Vec<LocalRecipient>,
        listener: &'static str,
        remote_ip: IpAddr,
        outbound: Vec<Address>,
    ) -> Self {
        let meta = MessageMeta::parse(&body);
        let sha256 = digest(&body);
        IncomingMessage {
            object_key: object_key(&id),
            id,
            body: Bytes::from(body),
            sha256,
            meta,
            envelope_from,
            recipients,
            outbound,
            tags: Vec::new(),
            listener,
            remote_ip,
            submitted_by: None,
            authentication: None,
            spam: None,
        }
    }

    /// Replaces the body with `body`, the same message with header fields the server
    /// added before it (DKIM signatures, Authentication-Results), whose [`digest`] the
    /// caller computed (off the async threads); the index stays.
    pub fn set_body(&mut self, body: Vec<u8>, sha256: String) {
        self.sha256 = sha256;
        self.body = Bytes::from(body);
    }
}

/// Characters a tag may hold besides ASCII letters and digits.
pub const TAG_CHARS: &str = "-_.:/";

/// A mailbox entry's tag (set through the API or by a pre_receive hook): 1 to 64
/// letters, digits or [`TAG_CHARS`].
pub fn valid_tag(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || TAG_CHARS.contains(c))
}

/// `messages/YYYY-MM-DD/HH/<id>.eml`, from the time in the UUIDv7: messages received
/// together share a directory (one directory flush per batch), and no directory grows
/// without bound.
pub fn object_key(id: &str) -> String {
    let millis = uuid::Uuid::parse_str(id)
        .ok()
        .and_then(|u| u.get_timestamp())
        .map(|ts| {
            let (secs, nanos) = ts.to_unix();
            secs as i64 * 1000 + i64::from(nanos / 1_000_000)
        })
        .unwrap_or(0);
    let time = chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default();
    format!("messages/{}/{id}.eml", time.format("%Y-%m-%d/%H"))
}

/// The SHA-256 of a body, in hex: what `messages.sha256` records.
pub fn digest(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

pub use crate::tokens::hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_indexed_headers() {
        let raw = b"From: Alice <alice@a.test>\r\nTo: bob@b.test, carol@b.test\r\nSubject: Hello\r\nMessage-ID: <abc@a.test>\r\nDate: Tue, 1 Jul 2025 10:00:00 +0200\r\n\r\nbody\r\n";
        let m = MessageMeta::parse(raw);
        assert_eq!(m.message_id.as_deref(), Some("abc@a.test"));
        assert_eq!(m.subject.as_deref(), Some("Hello"));
        assert_eq!(m.from.as_deref(), Some("alice@a.test"));
        assert_eq!(m.to.as_deref(), Some("bob@b.test, carol@b.test"));
        assert_eq!(m.date.unwrap().to_rfc3339(), "2025-07-01T10:00:00+02:00");
        assert_eq!(m.attachments, 0);
    }

    #[test]
    fn object_keys_follow_arrival_time() {
        let id = "01a228ad-3a7f-777d-9ebf-478a3a300e45";
        assert_eq!(object_key(id), format!("messages/2026-11-29/18/{id}.eml"));
    }
}
