//! The replies the queue records for each attempt: the remote server's answer, or the
//! queue's own reason in the same form (code, enhanced status, text). The worker, the
//! history and DSNs read the code and the status from fields; the stored form is the
//! text an operator sees (`550 5.1.1 no such user`), written once by `Display`.

use std::fmt;

/// Reply codes the queue acts on or writes (RFC 5321 §4.2.3).
pub mod code {
    /// 220: the greeting of a server ready to talk.
    pub const SERVICE_READY: u16 = 220;
    /// 354: go ahead with the message after DATA.
    pub const START_MAIL_INPUT: u16 = 354;
    /// 421: the server is closing the connection.
    pub const SERVICE_CLOSING: u16 = 421;
    /// 451: local error in processing; the queue's "try again later".
    pub const LOCAL_ERROR: u16 = 451;
    /// 550: mailbox unavailable; the queue's "this destination will never work".
    pub const MAILBOX_UNAVAILABLE: u16 = 550;
    /// 552: exceeded storage allocation (the message is bigger than the server takes).
    pub const EXCEEDED_STORAGE: u16 = 552;
    /// 553: mailbox name not allowed (an address the server cannot take).
    pub const MAILBOX_NAME_NOT_ALLOWED: u16 = 553;
}

/// An enhanced mail system status code (RFC 3463 §2): `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedStatus {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// RFC 3463 §3.1 X.0.0: other undefined status, permanent.
    pub const OTHER_PERMANENT: Self = Self::new(5, 0, 0);
    /// RFC 3463 §3.1 X.0.0: other undefined status, transient.
    pub const OTHER_TRANSIENT: Self = Self::new(4, 0, 0);
    /// RFC 3463 §3.2 X.1.2: bad destination system address (the domain does not exist).
    pub const BAD_DESTINATION_SYSTEM: Self = Self::new(5, 1, 2);
    /// RFC 7505 §4.2 X.1.10: the recipient's domain has a null MX.
    pub const NULL_MX: Self = Self::new(5, 1, 10);
    /// RFC 3463 §3.4 X.3.0: other or undefined mail system status (our object store).
    pub const MAIL_SYSTEM: Self = Self::new(4, 3, 0);
    /// RFC 3463 §3.4 X.3.4: message too big for system.
    pub const MESSAGE_TOO_BIG: Self = Self::new(5, 3, 4);
    /// RFC 3463 §3.4 X.3.5: system incorrectly configured (a route that is no address).
    pub const MISCONFIGURED: Self = Self::new(5, 3, 5);
    /// RFC 3463 §3.5 X.4.1: no answer from host.
    pub const NO_ANSWER: Self = Self::new(4, 4, 1);
    /// RFC 3463 §3.5 X.4.2: bad connection.
    pub const BAD_CONNECTION: Self = Self::new(4, 4, 2);
    /// RFC 3463 §3.5 X.4.3: directory (here DNS) server failure.
    pub const ROUTING_SERVER_FAILURE: Self = Self::new(4, 4, 3);
    /// RFC 3463 §3.5 X.4.4: unable to route.
    pub const UNABLE_TO_ROUTE: Self = Self::new(4, 4, 4);
    /// RFC 3463 §3.5 X.4.7: delivery time expired (`queue.max_age`).
    pub const DELIVERY_EXPIRED: Self = Self::new(4, 4, 7);
    /// RFC 6531 §3.7.4.2 X.6.7: non-ASCII addresses not permitted there.
    pub const NON_ASCII_ADDRESS: Self = Self::new(5, 6, 7);
}

impl From<[u8; 3]> for EnhancedStatus {
    fn from([class, subject, detail]: [u8; 3]) -> Self {
        EnhancedStatus::new(class, subject.into(), detail.into())
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// What a reply means for the recipient it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    /// 2xx: taken.
    Positive,
    /// Anything not positive and not permanent: try again later.
    Transient,
    /// 5xx: give up and bounce.
    Permanent,
}

/// A reply from the remote server, or the queue's own reason in the same form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    pub code: u16,
    pub status: Option<EnhancedStatus>,
    pub text: String,
}

impl RemoteReply {
    pub fn new(code: u16, status: Option<EnhancedStatus>, text: impl Into<String>) -> Self {
        RemoteReply {
            code,
            status,
            text: text.into(),
        }
    }

    /// One of the queue's own replies: always with an enhanced status.
    fn local(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Self {
        RemoteReply::new(code, Some(status), text)
    }

    pub fn class(&self) -> ReplyClass {
        if (200..300).contains(&self.code) {
            ReplyClass::Positive
        } else if self.code >= 500 {
            ReplyClass::Permanent
        } else {
            ReplyClass::Transient
        }
    }

    pub fn is_positive(&self) -> bool {
        self.class() == ReplyClass::Positive
    }

    pub fn is_transient(&self) -> bool {
        self.class() == ReplyClass::Transient
    }

    pub fn is_permanent(&self) -> bool {
        self.class() == ReplyClass::Permanent
    }

    /// 421: the server is closing the connection.
    pub fn closes_connection(&self) -> bool {
        self.code == code::SERVICE_CLOSING
    }

    /// The status a DSN reports (RFC 3464 §2.3.4): the reply's enhanced status, or
    /// X.0.0 of its class when it had none.
    pub fn dsn_status(&self) -> EnhancedStatus {
        match self.status {
            Some(status) => status,
            None if self.is_permanent() => EnhancedStatus::OTHER_PERMANENT,
            None => EnhancedStatus::OTHER_TRANSIENT,
        }
    }
}

/// The recorded form: `code status text`, or `code text` without a status.
impl fmt::Display for RemoteReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            Some(status) => write!(f, "{} {} {}", self.code, status, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

// The queue's own replies, recorded where the remote server gave none.

/// The body is gone from the object store (and too old to be still on its way).
pub fn body_missing() -> RemoteReply {
    RemoteReply::local(
        code::LOCAL_ERROR,
        EnhancedStatus::MAIL_SYSTEM,
        "message body missing from the object store",
    )
}

/// The object store failed to return the body.
pub fn body_unavailable(error: &str) -> RemoteReply {
    RemoteReply::local(
        code::LOCAL_ERROR,
        EnhancedStatus::MAIL_SYSTEM,
        format!("message body unavailable: {error}"),
    )
}

/// No host of the destination could be reached.
pub fn cannot_connect(destination: &str, error: &str) -> RemoteReply {
    RemoteReply::local(
        code::LOCAL_ERROR,
        EnhancedStatus::NO_ANSWER,
        format!("cannot deliver to {destination}: {error}"),
    )
}

/// The connection broke during a transaction: its outcome is unknown.
pub fn connection_lost(host: &str, error: &str) -> RemoteReply {
    RemoteReply::local(
        code::LOCAL_ERROR,
        EnhancedStatus::BAD_CONNECTION,
        format!("connection to {host} lost: {error}"),
    )
}

/// The server announced a SIZE limit (RFC 1870) below the message's size.
pub fn too_big(size: usize, limit: usize) -> RemoteReply {
    RemoteReply::local(
        code::EXCEEDED_STORAGE,
        EnhancedStatus::MESSAGE_TOO_BIG,
        format!("message of {size} bytes exceeds the server's limit of {limit} bytes"),
    )
}

/// The envelope needs SMTPUTF8 (RFC 6531) and the server does not offer it.
pub fn smtputf8_unsupported() -> RemoteReply {
    RemoteReply::local(
        code::MAILBOX_NAME_NOT_ALLOWED,
        EnhancedStatus::NON_ASCII_ADDRESS,
        "the server does not support internationalised addresses (SMTPUTF8)",
    )
}

/// No next hop: temporary (451, try again) or permanent (550, bounce).
pub fn no_route(permanent: bool, status: EnhancedStatus, text: &str) -> RemoteReply {
    let code = if permanent {
        code::MAILBOX_UNAVAILABLE
    } else {
        code::LOCAL_ERROR
    };
    RemoteReply::local(code, status, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_form_is_code_status_text() {
        let with = RemoteReply::new(550, Some(EnhancedStatus::new(5, 1, 1)), "no such user");
        assert_eq!(with.to_string(), "550 5.1.1 no such user");
        let without = RemoteReply::new(550, None, "no such user");
        assert_eq!(without.to_string(), "550 no such user");
        assert_eq!(
            no_route(true, EnhancedStatus::NULL_MX, "a.test accepts no mail").to_string(),
            "550 5.1.10 a.test accepts no mail"
        );
    }

    #[test]
    fn classes_and_dsn_status() {
        let reply = |code| RemoteReply::new(code, None, "");
        assert_eq!(reply(250).class(), ReplyClass::Positive);
        assert_eq!(reply(451).class(), ReplyClass::Transient);
        assert_eq!(reply(354).class(), ReplyClass::Transient);
        assert_eq!(reply(552).class(), ReplyClass::Permanent);
        assert!(reply(421).closes_connection());
        assert_eq!(reply(550).dsn_status(), EnhancedStatus::OTHER_PERMANENT);
        assert_eq!(reply(451).dsn_status(), EnhancedStatus::OTHER_TRANSIENT);
        assert_eq!(too_big(2, 1).dsn_status().to_string(), "5.3.4");
    }
}
