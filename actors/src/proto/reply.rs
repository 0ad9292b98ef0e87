//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463, RFC 2034).
//!
//! Every reply the server sends is built from one of the named constructors below, so
//! the code, the enhanced code and the text stay together and can be grepped.

use std::borrow::Cow;

/// One SMTP reply: a three-digit code, an optional enhanced status code and its text.
/// A text with several lines becomes a multi-line reply (`250-...` then `250 ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<&'static str>,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn new(code: u16, enhanced: &'static str, text: &'static str) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: Cow::Borrowed(text),
        }
    }

    pub fn dynamic(code: u16, enhanced: &'static str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: Cow::Owned(text.into()),
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO, AUTH challenges).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            text: Cow::Owned(text.into()),
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Appends the wire form to `out`. Lines of the text are split on `\n`; CR and LF are
    /// never written except as the CRLF line terminator, so no text can inject a reply.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(sep as u8);
            if let Some(enhanced) = self.enhanced {
                out.extend_from_slice(enhanced.as_bytes());
                out.push(b' ');
            }
            out.extend(line.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 16);
        self.write_to(&mut out);
        out
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

// Positive completion (RFC 5321 §4.2.2).
pub const OK: Reply = Reply::new(250, "2.0.0", "OK");
pub const SENDER_OK: Reply = Reply::new(250, "2.1.0", "Sender OK");
pub const RECIPIENT_OK: Reply = Reply::new(250, "2.1.5", "Recipient OK");
pub const RESET_OK: Reply = Reply::new(250, "2.0.0", "Reset OK");
pub const NOOP_OK: Reply = Reply::new(250, "2.0.0", "OK");
pub const BYE: Reply = Reply::new(221, "2.0.0", "Bye");
pub const CANNOT_VRFY: Reply = Reply::new(
    252,
    "2.5.0",
    "Cannot VRFY user, but will accept message and attempt delivery",
);
pub const HELP: Reply = Reply::new(
    214,
    "2.0.0",
    "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
);
pub const START_DATA: Reply = Reply {
    code: 354,
    enhanced: None,
    text: Cow::Borrowed("End data with <CR><LF>.<CR><LF>"),
};
pub const READY_TLS: Reply = Reply::new(220, "2.0.0", "Ready to start TLS");
/// AUTH PLAIN without an initial response: an empty challenge (RFC 4954 §4).
pub const AUTH_PLAIN_CHALLENGE: Reply = Reply {
    code: 334,
    enhanced: None,
    text: Cow::Borrowed(""),
};
/// AUTH LOGIN asks for the user name, in base64 ("Username:").
pub const AUTH_LOGIN_USERNAME: Reply = Reply {
    code: 334,
    enhanced: None,
    text: Cow::Borrowed("VXNlcm5hbWU6"),
};
/// AUTH LOGIN asks for the password, in base64 ("Password:").
pub const AUTH_LOGIN_PASSWORD: Reply = Reply {
    code: 334,
    enhanced: None,
    text: Cow::Borrowed("UGFzc3dvcmQ6"),
};

/// The greeting (RFC 5321 §4.2): the server's name first.
pub fn greeting(hostname: &str) -> Reply {
    Reply::plain(220, format!("{hostname} ESMTP MaiRust"))
}

/// The answer to EHLO/HELO: the first line greets, the others (EHLO only) name the
/// extensions (RFC 5321 §4.1.1.1).
pub fn hello(lines: &[String]) -> Reply {
    Reply::plain(250, lines.join("\n"))
}

/// The message is stored durably under `id`.
pub fn queued(id: &str) -> Reply {
    Reply::dynamic(250, "2.0.0", format!("OK queued as {id}"))
}

/// A policy hook refused the message (SPEC M9: 550 5.7.1), with its text when it gave
/// one.
pub fn refused_by_policy(text: &str) -> Reply {
    Reply::dynamic(550, "5.7.1", or(text, "message refused by policy"))
}

/// The account sent its hourly allowance (`send_limits`): 451 4.7.0.
pub fn send_limit(text: &str) -> Reply {
    Reply::dynamic(
        451,
        "4.7.0",
        or(text, "sending limit reached, try again later"),
    )
}

/// A policy hook asked to try again later (SPEC M9: 451 4.7.1).
pub fn deferred_by_policy(text: &str) -> Reply {
    Reply::dynamic(451, "4.7.1", or(text, "try again later"))
}

fn or(text: &str, default: &str) -> String {
    if text.is_empty() { default } else { text }.to_string()
}
pub const AUTH_OK: Reply = Reply::new(235, "2.7.0", "Authentication succeeded");

// Transient failures.
/// RFC 3463 4.3.0: the mail system (database or object store) is unavailable.
pub const TEMPFAIL_SYSTEM: Reply = Reply::new(
    451,
    "4.3.0",
    "Temporary local problem, please try again later",
);
/// RFC 3463 4.3.1: `storage.limit_bytes` reached.
pub const STORAGE_FULL: Reply = Reply::new(452, "4.3.1", "Insufficient system storage");
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, "4.5.3", "Too many recipients");
pub const SHUTTING_DOWN: Reply = Reply::new(
    421,
    "4.3.2",
    "Service shutting down, closing transmission channel",
);
/// The body came slower than `smtp.limits.data_min_rate_bytes_per_second`.
pub const DATA_TOO_SLOW: Reply = Reply::new(421, "4.4.2", "Data transfer too slow, closing");
/// The session reached `smtp.limits.max_session_seconds`.
pub const SESSION_TOO_LONG: Reply = Reply::new(421, "4.4.2", "Session time limit reached, closing");
/// AUTH on a listener that does not offer it (`inbound` unless `smtp.auth_on_inbound`).
pub const AUTH_NOT_OFFERED: Reply =
    Reply::new(503, "5.5.1", "Authentication not enabled on this port");
/// The finished body found no room in memory within the DATA timeout.
pub const SYSTEM_BUSY: Reply = Reply::new(451, "4.3.2", "System busy, try again later");
pub const TIMEOUT: Reply = Reply::new(
    421,
    "4.4.2",
    "Timeout exceeded, closing transmission channel",
);
pub const TOO_MANY_SESSIONS: Reply =
    Reply::new(421, "4.7.0", "Too many connections, try again later");
pub const TOO_MANY_ERRORS: Reply = Reply::new(
    421,
    "4.7.0",
    "Too many errors, closing transmission channel",
);
pub const TLS_UNAVAILABLE: Reply = Reply::new(454, "4.7.0", "TLS not available");
pub const AUTH_TEMPFAIL: Reply = Reply::new(454, "4.7.0", "Temporary authentication failure");
/// Every password-check slot of the node is taken (`auth.max_concurrent_verifications`).
pub const AUTH_BUSY: Reply = Reply::new(
    454,
    "4.7.0",
    "Too many authentications in progress, try again shortly",
);
/// The client's address or the account is locked out after failed attempts.
pub const AUTH_LOCKED: Reply = Reply::new(
    454,
    "4.7.0",
    "Too many failed authentications, try again later",
);

// Permanent failures.
pub const SYNTAX_ERROR: Reply = Reply::new(500, "5.5.2", "Syntax error, command unrecognized");
pub const LINE_TOO_LONG: Reply = Reply::new(500, "5.5.2", "Line too long");
pub const NUL_IN_COMMAND: Reply = Reply::new(500, "5.5.2", "NUL byte in command");
pub const BARE_LF_IN_COMMAND: Reply = Reply::new(
    500,
    "5.5.2",
    "Bare <LF> received, lines must end with <CR><LF>",
);
pub const AUTH_CANCELLED: Reply = Reply::new(501, "5.0.0", "Authentication cancelled");
/// Arguments after a verb that takes none (DATA, RSET, QUIT, STARTTLS).
pub const UNEXPECTED_PARAMETERS: Reply = Reply::new(501, "5.5.4", "Syntax error in parameters");
pub const VRFY_NEEDS_ARGUMENT: Reply = Reply::new(501, "5.5.4", "VRFY needs an argument");
pub const HELLO_SYNTAX: Reply = Reply::new(501, "5.5.4", "Syntax: EHLO/HELO hostname");
pub const MAIL_SYNTAX: Reply = Reply::new(501, "5.5.4", "Syntax: FROM:<address> [parameters]");
pub const RCPT_SYNTAX: Reply = Reply::new(501, "5.5.4", "Syntax: TO:<address> [parameters]");
pub const AUTH_SYNTAX: Reply =
    Reply::new(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
pub const BAD_SIZE: Reply = Reply::new(501, "5.5.4", "Invalid SIZE parameter");
pub const BAD_BODY_TYPE: Reply = Reply::new(501, "5.5.4", "Unsupported BODY type");
pub const INVALID_BASE64: Reply = Reply::new(501, "5.5.2", "Invalid base64 data");
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, "5.5.1", "Command not implemented");
pub const BAD_SEQUENCE_HELO: Reply = Reply::new(503, "5.5.1", "Send EHLO/HELO first");
pub const BAD_SEQUENCE_MAIL: Reply = Reply::new(503, "5.5.1", "Sender already specified");
pub const BAD_SEQUENCE_NEED_MAIL: Reply = Reply::new(503, "5.5.1", "Need MAIL before RCPT");
pub const BAD_SEQUENCE_NEED_RCPT: Reply = Reply::new(503, "5.5.1", "Need RCPT before DATA");
pub const ALREADY_AUTHENTICATED: Reply = Reply::new(503, "5.5.1", "Already authenticated");
pub const AUTH_IN_TRANSACTION: Reply =
    Reply::new(503, "5.5.1", "AUTH not permitted during a mail transaction");
pub const ALREADY_TLS: Reply = Reply::new(503, "5.5.1", "TLS already active");
pub const AUTH_MECHANISM_UNSUPPORTED: Reply =
    Reply::new(504, "5.5.4", "Unrecognized authentication mechanism");
pub const AUTH_REQUIRED: Reply = Reply::new(530, "5.7.0", "Authentication required");
pub const AUTH_FAILED: Reply = Reply::new(535, "5.7.8", "Authentication credentials invalid");
/// RFC 4954 §6: 538 5.7.11 Encryption required for requested authentication mechanism.
pub const ENCRYPTION_REQUIRED: Reply = Reply::new(
    538,
    "5.7.11",
    "Encryption required for requested authentication mechanism",
);
pub const NO_SUCH_USER: Reply = Reply::new(550, "5.1.1", "Mailbox does not exist");
pub const RELAY_DENIED: Reply = Reply::new(550, "5.7.1", "Relaying denied");
pub const PROXY_REFUSED: Reply = Reply::new(
    550,
    "5.7.1",
    "PROXY header refused: this address is not a trusted proxy",
);
pub const BARE_LF_IN_DATA: Reply = Reply::new(
    550,
    "5.6.0",
    "Message rejected: bare <LF> or <CR> in content, lines must end with <CR><LF>",
);
pub const NUL_IN_DATA: Reply = Reply::new(550, "5.6.0", "Message rejected: NUL byte in content");
pub const DATA_LINE_TOO_LONG: Reply = Reply::new(550, "5.6.0", "Message rejected: line too long");
pub const MESSAGE_TOO_BIG: Reply = Reply::new(
    552,
    "5.3.4",
    "Message size exceeds fixed maximum message size",
);
/// MAIL FROM of an authenticated client names an address its account may not use
/// (`smtp.submission.enforce_envelope_sender`). RFC 5321 §4.2.2 553: mailbox name not
/// allowed; RFC 3463 5.7.1: delivery not authorized.
pub const SENDER_NOT_OWNED: Reply = Reply::new(
    553,
    "5.7.1",
    "Sender address not owned by authenticated user",
);
/// `MAIL FROM:<>` from an authenticated client (`smtp.submission.allow_null_sender`).
pub const NULL_SENDER_REFUSED: Reply = Reply::new(
    553,
    "5.7.1",
    "Null sender not allowed for authenticated users",
);
// The From: header is only known at the end of DATA, where RFC 5321 §4.3.2 lists 550
// ("rejections for policy reasons") among the replies and 553 not at all (it belongs to
// MAIL and RCPT): the From: refusals are 550 with the same enhanced code 5.7.1.
/// A From: address the authenticated account may not use
/// (`smtp.submission.enforce_from_header`).
pub const FROM_HEADER_NOT_OWNED: Reply = Reply::new(
    550,
    "5.7.1",
    "From: header address not owned by authenticated user",
);
/// No From: header, or one without an address.
pub const FROM_HEADER_MISSING: Reply = Reply::new(
    550,
    "5.7.1",
    "Message needs a From: header with the authenticated user's address",
);
/// More than one From: header (RFC 5322 §3.6: exactly one).
pub const FROM_HEADER_REPEATED: Reply =
    Reply::new(550, "5.7.1", "Message has more than one From: header");
pub const BAD_SENDER_SYNTAX: Reply = Reply::new(553, "5.1.7", "Invalid sender address syntax");
pub const BAD_RECIPIENT_SYNTAX: Reply =
    Reply::new(553, "5.1.3", "Invalid recipient address syntax");
pub const UNKNOWN_PARAMETER: Reply = Reply::new(555, "5.5.4", "Unsupported MAIL/RCPT parameter");
pub const SMTPUTF8_REQUIRED: Reply =
    Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_reply() {
        assert_eq!(OK.to_bytes(), b"250 2.0.0 OK\r\n");
        assert_eq!(
            START_DATA.to_bytes(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n"
        );
    }

    #[test]
    fn multi_line_reply() {
        let r = Reply::plain(250, "mx.test\nPIPELINING\nSIZE 100");
        assert_eq!(
            r.to_bytes(),
            b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n".to_vec()
        );
    }

    #[test]
    fn text_cannot_inject_lines() {
        let r = Reply::dynamic(550, "5.1.1", "a\rb");
        assert_eq!(r.to_bytes(), b"550 5.1.1 ab\r\n");
    }
}
