//! The sender policy of authenticated submission (SPEC M3, S5): which sender addresses
//! an account may use, checked on the envelope (MAIL FROM) and on the From: header of
//! what it sends.
//!
//! An SMTP session that authenticated holds a [`Submitter`]; `POST /send` finds the
//! account behind its sender ([`super::Pipeline::sender_account`]). Both check each
//! message with it (`smtp.submission.*` says which checks are in force). Today an
//! account may use its own address only. Aliases (SPEC M8) go into
//! [`Submitter::for_user`] (the addresses an account may use) and the directory's
//! answer to who owns an address; every check follows.
//!
//! The account is recorded on every message it submits (`messages.submitted_by`, and a
//! comment in our Received header), so mail can always be traced to who sent it.

use mail_parser::{HeaderName, HeaderValue, MessageParser};
use mairust_entities::user;

use crate::config::SmtpConfig;
use crate::proto::Address;

/// The checks in force for authenticated SMTP clients (`smtp.submission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub allow_null_sender: bool,
    pub enforce_envelope_sender: bool,
    pub enforce_from_header: bool,
}

impl Policy {
    /// Every check on: the default.
    pub const STRICT: Policy = Policy {
        allow_null_sender: false,
        enforce_envelope_sender: true,
        enforce_from_header: true,
    };

    pub fn from_config(smtp: &SmtpConfig) -> Policy {
        Policy {
            allow_null_sender: smtp.submission.allow_null_sender,
            enforce_envelope_sender: smtp.enforce_envelope_sender(),
            enforce_from_header: smtp.submission.enforce_from_header,
        }
    }
}

/// Why a sender was refused. The SMTP session turns it into a reply, at MAIL FROM
/// (the envelope) or at the end of DATA (the From: header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `MAIL FROM:<>` while `allow_null_sender` is off.
    NullSender,
    /// MAIL FROM names an address the account may not use.
    EnvelopeSender(String),
    /// No From: header, or one that holds no address (RFC 5322 §3.6 requires one).
    NoFromAddress,
    /// More than one From: header (RFC 5322 §3.6 allows one): mail clients differ in
    /// which they show, and the one they show would go unchecked.
    SeveralFromHeaders,
    /// A From: address the account may not use; also a display name that is such an
    /// address (`"ceo@bank.test" <bob@example.test>`: many clients show only the name).
    FromAddress(String),
}

impl Refusal {
    /// Stable name for logs and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NullSender => "null_sender",
            Refusal::EnvelopeSender(_) => "envelope_sender_not_owned",
            Refusal::NoFromAddress => "no_from_address",
            Refusal::SeveralFromHeaders => "several_from_headers",
            Refusal::FromAddress(_) => "from_address_not_owned",
        }
    }

    /// The address refused, when there is one.
    pub fn address(&self) -> Option<&str> {
        match self {
            Refusal::EnvelopeSender(a) | Refusal::FromAddress(a) => Some(a),
            _ => None,
        }
    }
}

/// An account that submits mail, and the sender addresses it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    /// The user's address, as stored (lowercase): what `messages.submitted_by` records.
    account: String,
    /// Lookup keys ([`Address::key`]) of the addresses the account may send as.
    addresses: Vec<String>,
}

impl Submitter {
    /// A user and the addresses it may send as: its own (aliases will join here).
    pub fn for_user(user: &user::Model) -> Submitter {
        Submitter {
            account: user.address.clone(),
            addresses: vec![user.address.to_lowercase()],
        }
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// Whether one of the addresses the account may use is of `domain` (lower case):
    /// mail it sends from that domain may carry the domain's DKIM signature.
    pub fn owns_domain(&self, domain: &str) -> bool {
        self.addresses
            .iter()
            .any(|a| a.rsplit_once('@').is_some_and(|(_, d)| d == domain))
    }

    pub fn may_use(&self, address: &Address) -> bool {
        let key = address.key();
        self.addresses.contains(&key)
    }

    /// MAIL FROM (RFC 5321 §4.1.1.2): `sender` is `None` for the null reverse-path.
    pub fn check_envelope(&self, policy: Policy, sender: Option<&Address>) -> Result<(), Refusal> {
        match sender {
            None if policy.allow_null_sender => Ok(()),
            None => Err(Refusal::NullSender),
            Some(a) if policy.enforce_envelope_sender && !self.may_use(a) => {
                Err(Refusal::EnvelopeSender(a.to_string()))
            }
            Some(_) => Ok(()),
        }
    }

    /// The From: header of `message` (header section first, as received): exactly one
    /// field, holding at least one address, every address one the account may use.
    /// Header names are matched as mail-parser reads them (case and blanks ignored),
    /// the same parser that indexes the message.
    pub fn check_from_header(&self, policy: Policy, message: &[u8]) -> Result<(), Refusal> {
        if !policy.enforce_from_header {
            return Ok(());
        }
        let parsed = MessageParser::new()
            .parse_headers(message)
            .ok_or(Refusal::NoFromAddress)?;
        let mut fields = parsed
            .headers()
            .iter()
            .filter(|h| h.name == HeaderName::From);
        let field = fields.next().ok_or(Refusal::NoFromAddress)?;
        if fields.next().is_some() {
            return Err(Refusal::SeveralFromHeaders);
        }
        let mailboxes: Vec<&mail_parser::Addr> = match &field.value {
            HeaderValue::Address(mail_parser::Address::List(list)) => list.iter().collect(),
            HeaderValue::Address(mail_parser::Address::Group(groups)) => {
                groups.iter().flat_map(|g| g.addresses.iter()).collect()
            }
            _ => Vec::new(),
        };
        if mailboxes.is_empty() {
            return Err(Refusal::NoFromAddress);
        }
        for mailbox in mailboxes {
            let text = mailbox.address.as_deref().ok_or(Refusal::NoFromAddress)?;
            match Address::parse(text.trim()) {
                Some(a) if self.may_use(&a) => {}
                _ => return Err(Refusal::FromAddress(text.to_string())),
            }
            if let Some(name) = mailbox.name.as_deref()
                && let Some(other) = foreign_address_in(name, |a| self.may_use(a))
            {
                return Err(Refusal::FromAddress(other));
            }
        }
        Ok(())
    }
}

/// An address in a display name that `owned` does not accept: words holding `@`,
/// stripped of the quotes, brackets and punctuation around them, that parse as an
/// address. Other text (`Bob @ home`) is left alone.
fn foreign_address_in(name: &str, owned: impl Fn(&Address) -> bool) -> Option<String> {
    name.split(|c: char| c.is_whitespace() || "<>()[],;:\"'".contains(c))
        .filter(|word| word.contains('@'))
        .filter_map(|word| Address::parse(word.trim_matches(|c: char| c == '.')))
        .find(|a| !owned(a))
        .map(|a| a.to_string())
}

/// `text` made safe inside a Received header comment (RFC 5322 §3.2.2): no control
/// characters, and `(`, `)`, `\` escaped, so an address cannot end the comment.
pub fn comment_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().filter(|c| !c.is_control()) {
        if matches!(c, '(' | ')' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> Submitter {
        Submitter {
            account: "bob@example.test".into(),
            addresses: vec!["bob@example.test".into()],
        }
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn from(headers: &str) -> Result<(), Refusal> {
        let message = format!("Received: from x by y; now\r\n{headers}Subject: s\r\n\r\nbody\r\n");
        bob().check_from_header(Policy::STRICT, message.as_bytes())
    }

    #[test]
    fn owned_domains_are_those_of_the_accounts_addresses() {
        assert!(bob().owns_domain("example.test"));
        assert!(!bob().owns_domain("other.test"));
        assert!(!bob().owns_domain("test"));
    }

    #[test]
    fn envelope_sender_must_be_owned() {
        let p = Policy::STRICT;
        assert_eq!(
            bob().check_envelope(p, Some(&addr("Bob@Example.TEST"))),
            Ok(())
        );
        assert_eq!(
            bob().check_envelope(p, Some(&addr("alice@example.test"))),
            Err(Refusal::EnvelopeSender("alice@example.test".into()))
        );
        assert_eq!(bob().check_envelope(p, None), Err(Refusal::NullSender));
        let lax = Policy {
            allow_null_sender: true,
            enforce_envelope_sender: false,
            enforce_from_header: true,
        };
        assert_eq!(bob().check_envelope(lax, None), Ok(()));
        assert_eq!(
            bob().check_envelope(lax, Some(&addr("alice@example.test"))),
            Ok(())
        );
    }

    #[test]
    fn own_from_header_passes() {
        assert_eq!(from("From: <bob@example.test>\r\n"), Ok(()));
        assert_eq!(from("From: Bob Example <BOB@example.test>\r\n"), Ok(()));
        assert_eq!(from("from : \"Bob\" <bob@example.test>\r\n"), Ok(()));
        assert_eq!(
            from("From: \"bob@example.test\" <bob@example.test>\r\n"),
            Ok(())
        );
        assert_eq!(from("From: Bob @ home <bob@example.test>\r\n"), Ok(()));
    }

    #[test]
    fn foreign_from_header_is_refused() {
        let foreign = |a: &str| Err(Refusal::FromAddress(a.into()));
        assert_eq!(
            from("From: <alice@example.test>\r\n"),
            foreign("alice@example.test")
        );
        assert_eq!(
            from("From: <bob@example.test>, ceo@bank.test\r\n"),
            foreign("ceo@bank.test")
        );
        assert_eq!(
            from("From: \"ceo@bank.test\" <bob@example.test>\r\n"),
            foreign("ceo@bank.test")
        );
        assert_eq!(
            from("From: Staff: <bob@example.test>, <ceo@bank.test>;\r\n"),
            foreign("ceo@bank.test")
        );
        assert_eq!(
            from("From: bob@example.test\r\nFROM: ceo@bank.test\r\n"),
            Err(Refusal::SeveralFromHeaders)
        );
        assert_eq!(
            from("To: <bob@example.test>\r\n"),
            Err(Refusal::NoFromAddress)
        );
        assert_eq!(from("From: Bob\r\n"), Err(Refusal::NoFromAddress));
        assert_eq!(from("From: undisclosed:;\r\n"), Err(Refusal::NoFromAddress));
    }

    #[test]
    fn from_check_can_be_turned_off() {
        let off = Policy {
            enforce_from_header: false,
            ..Policy::STRICT
        };
        let message = b"From: ceo@bank.test\r\nFrom: x@y.test\r\n\r\nbody\r\n";
        assert_eq!(bob().check_from_header(off, message), Ok(()));
    }

    #[test]
    fn comments_cannot_be_closed_early() {
        assert_eq!(
            comment_text("\"a)b\\c(\"@x.test\r\n"),
            "\"a\\)b\\\\c\\(\"@x.test"
        );
    }
}
