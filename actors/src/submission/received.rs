//! The one Received header (RFC 5321 §4.4) this server adds to every message it accepts,
//! whichever way the message came in.

use std::net::IpAddr;

use super::Recipients;
use super::sender::comment_text;

/// Where a message came from: the client's address, the account that submitted it
/// (SMTP AUTH, or the API's sender; named in a comment before `by`, as Postfix does),
/// and the way in.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub via: Via<'a>,
    pub remote: IpAddr,
    pub account: Option<&'a str>,
}

/// How a message reached us: what the Received header says after `from` and `with`.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// An SMTP client: its HELO/EHLO name, whether it spoke ESMTP and TLS.
    Smtp {
        helo: Option<&'a str>,
        esmtp: bool,
        tls: bool,
    },
    /// `POST /api/v1/send`.
    Api,
}

/// The whole header line, CRLF-terminated. The account and the client's HELO name are
/// made safe for a comment.
pub fn received_header(
    hostname: &str,
    origin: Origin<'_>,
    id: &str,
    recipients: &Recipients,
) -> String {
    let Origin {
        via,
        remote,
        account,
    } = origin;
    let (from, with, comment) = match via {
        Via::Smtp { helo, esmtp, tls } => {
            let protocol = match (esmtp, tls, account.is_some()) {
                (false, _, _) => "SMTP",
                (true, false, false) => "ESMTP",
                (true, true, false) => "ESMTPS",
                (true, false, true) => "ESMTPA",
                (true, true, true) => "ESMTPSA",
            };
            let helo: String = helo
                .unwrap_or("unknown")
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            let comment = account
                .map(|a| format!(" (authenticated as {})", comment_text(a)))
                .unwrap_or_default();
            (helo, protocol, comment)
        }
        Via::Api => {
            let comment = account
                .map(|a| format!(" (API submission for {})", comment_text(a)))
                .unwrap_or_default();
            ("api".to_string(), "HTTP", comment)
        }
    };
    // SMTP names a single recipient (as Postfix does); the API never has, so a lone
    // Bcc recipient is not written into the header of what it sends.
    let for_clause = match via {
        Via::Smtp { .. } => recipients
            .single()
            .map(|one| format!("\r\n\tfor <{one}>"))
            .unwrap_or_default(),
        Via::Api => String::new(),
    };
    format!(
        "Received: from {from} ([{remote}]){comment}\r\n\tby {hostname} (MaiRust) with {with} id {id}{for_clause};\r\n\t{date}\r\n",
        date = chrono::Utc::now().to_rfc2822(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Address;

    fn header(
        via: Via<'_>,
        remote: &str,
        account: Option<&str>,
        recipients: &Recipients,
    ) -> String {
        let origin = Origin {
            via,
            remote: remote.parse().unwrap(),
            account,
        };
        received_header("mx.test", origin, "ID", recipients)
    }

    #[test]
    fn smtp_names_helo_protocol_and_account() {
        let mut one = Recipients::default();
        one.add_outbound(Address::parse("x@remote.test").unwrap());
        let tls = Via::Smtp {
            helo: Some("client\r\n.test"),
            esmtp: true,
            tls: true,
        };
        let h = header(tls, "192.0.2.1", Some("a)b@x.test"), &one);
        assert!(
            h.starts_with(
                "Received: from client.test ([192.0.2.1]) (authenticated as a\\)b@x.test)\r\n\tby mx.test (MaiRust) with ESMTPSA id ID\r\n\tfor <x@remote.test>;\r\n\t"
            ),
            "{h:?}"
        );
        assert!(h.ends_with("\r\n") && !h[..h.len() - 2].contains("\r\n\r\n"));
        let plain = Via::Smtp {
            helo: None,
            esmtp: false,
            tls: false,
        };
        let h = header(plain, "192.0.2.1", None, &Recipients::default());
        assert!(
            h.starts_with(
                "Received: from unknown ([192.0.2.1])\r\n\tby mx.test (MaiRust) with SMTP id ID;"
            ),
            "{h:?}"
        );
    }

    #[test]
    fn api_names_the_account() {
        let mut one = Recipients::default();
        one.add_outbound(Address::parse("x@remote.test").unwrap());
        // No `for <x@remote.test>`: a lone Bcc recipient is not written into the header.
        let h = header(Via::Api, "2001:db8::1", Some("bob@x.test"), &one);
        assert!(
            h.starts_with("Received: from api ([2001:db8::1]) (API submission for bob@x.test)\r\n\tby mx.test (MaiRust) with HTTP id ID;"),
            "{h:?}"
        );
    }
}
