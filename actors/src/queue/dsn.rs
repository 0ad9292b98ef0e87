//! Delivery status notifications (RFC 3464): a multipart/report with a human part, the
//! machine-readable `message/delivery-status`, and the original headers, built with
//! mail-builder. Sent with the null reverse-path, so a bounce is never bounced.

use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;

use super::reply::{EnhancedStatus, RemoteReply};

/// Why a recipient is listed, in the human part: the reply was permanent...
const WHY_PERMANENT: &str = "permanent error";
/// ... or `queue.max_age` passed while it was still being retried.
const WHY_EXPIRED: &str = "gave up after retrying for too long; last error";

/// One recipient the message could not be delivered to.
#[derive(Debug, Clone)]
pub struct FailedRecipient {
    pub address: String,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: EnhancedStatus,
    /// The remote reply or our reason, e.g. `550 5.1.1 no such user`.
    pub diagnostic: RemoteReply,
    /// The host that gave the reply, if one did.
    pub remote_mta: Option<String>,
    /// Given up because `queue.max_age` passed, not because of a permanent reply.
    pub expired: bool,
}

/// What a DSN is about.
pub struct Bounce<'a> {
    /// Our host name (Reporting-MTA, the From domain).
    pub reporting_mta: &'a str,
    /// The original reverse-path: the DSN's only recipient.
    pub original_sender: &'a str,
    pub queue_id: &'a str,
    pub arrival: DateTime<Utc>,
    pub failed: &'a [FailedRecipient],
    /// The original message, of which only the header section is returned.
    pub original: &'a [u8],
}

/// The header section of a message, up to and including the blank line.
fn header_section(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(message.len());
    &message[..end]
}

pub fn build(b: &Bounce) -> Vec<u8> {
    let now = Utc::now();
    let mut human = format!(
        "This is the mail system at {}.\r\n\r\nYour message (queue id {}) could not be delivered to the following recipient(s):\r\n\r\n",
        b.reporting_mta, b.queue_id
    );
    for f in b.failed {
        let why = if f.expired {
            WHY_EXPIRED
        } else {
            WHY_PERMANENT
        };
        human.push_str(&format!("  <{}>: {}: {}\r\n", f.address, why, f.diagnostic));
    }
    human.push_str("\r\nThe headers of your message are attached.\r\n");

    let mut status = format!(
        "Reporting-MTA: dns; {}\r\nX-MaiRust-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        b.reporting_mta,
        b.queue_id,
        b.arrival.to_rfc2822()
    );
    for f in b.failed {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n",
            f.address, f.status
        ));
        if let Some(mta) = &f.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
        }
        status.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {}\r\n",
            f.diagnostic.to_string().replace(['\r', '\n'], " "),
            now.to_rfc2822()
        ));
    }

    let headers = header_section(b.original).to_vec();
    let headers_encoding = if headers.is_ascii() { "7bit" } else { "8bit" };
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human),
            MimePart::new("message/delivery-status", status.into_bytes()).transfer_encoding("7bit"),
            MimePart::new("text/rfc822-headers", headers).transfer_encoding(headers_encoding),
        ],
    );
    let from = format!("MAILER-DAEMON@{}", b.reporting_mta);
    MessageBuilder::new()
        .from(("Mail Delivery System", from.as_str()))
        .to(b.original_sender)
        .subject("Undelivered Mail Returned to Sender")
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .date(now.timestamp())
        .body(report)
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use mail_parser::MimeHeaders;

    use super::*;

    #[test]
    fn dsn_is_a_delivery_status_report() {
        let original = b"From: a@local.test\r\nSubject: hi\r\nMessage-ID: <m1@local.test>\r\n\r\nsecret body\r\n";
        let failed = [FailedRecipient {
            address: "nobody@remote.test".into(),
            status: EnhancedStatus::new(5, 1, 1),
            diagnostic: RemoteReply::new(550, Some(EnhancedStatus::new(5, 1, 1)), "no such user"),
            remote_mta: Some("mx.remote.test".into()),
            expired: false,
        }];
        let raw = build(&Bounce {
            reporting_mta: "mail.local.test",
            original_sender: "a@local.test",
            queue_id: "q1",
            arrival: Utc::now(),
            failed: &failed,
            original,
        });
        let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            message
                .root_part()
                .content_type()
                .map(|c| (c.ctype(), c.subtype())),
            Some(("multipart", Some("report")))
        );
        assert_eq!(
            message
                .root_part()
                .content_type()
                .and_then(|c| c.attribute("report-type")),
            Some("delivery-status")
        );
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.contains("Content-Type: message/delivery-status"),
            "{text}"
        );
        assert!(text.contains("Final-Recipient: rfc822; nobody@remote.test"));
        assert!(text.contains("Action: failed"));
        assert!(text.contains("Status: 5.1.1"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
        assert!(text.contains("Subject: hi"), "original headers returned");
        assert!(!text.contains("secret body"), "original body not returned");
        assert!(text.contains("Auto-Submitted: auto-replied"));
    }
}
