//! Command parsing (RFC 5321 §4.1): one line in, one [`Command`] or an error [`Reply`] out.
//!
//! The line has already been split off by [`super::line`], without its CRLF.

use super::reply::{self, Reply};

/// A mailbox `local@domain` (RFC 5321 §4.1.2). The domain is kept lowercase; the local
/// part keeps its case (it is matched case-insensitively by the account lookup).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

impl Address {
    pub fn parse(s: &str) -> Option<Address> {
        let (local, domain) = s.rsplit_once('@')?;
        if local.is_empty() || domain.is_empty() || local.len() > 64 || domain.len() > 255 {
            return None;
        }
        if !valid_local(local) || !valid_domain(domain) {
            return None;
        }
        Some(Address {
            local: local.to_string(),
            domain: domain.to_ascii_lowercase(),
        })
    }

    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }

    /// The canonical lookup key: lowercase `local@domain`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }

    /// The address can be written as it is into a header field and an SMTP command,
    /// which §4.1.2's grammar alone does not promise: a quoted local part may hold `>`,
    /// `,`, `"` or `\` (many parsers end or split the address there), and non-ASCII
    /// text may hold C1 controls or line separators. Safe here: a local part of letters,
    /// digits and atext characters with dots (spaces too when quoted), and a domain of
    /// letters, digits, `-` and `.` (or an address literal of letters, digits, `.`, `:`).
    pub fn is_header_safe(&self) -> bool {
        let quoted = self
            .local
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'));
        let local = quoted.unwrap_or(&self.local);
        let local_ok = !local.is_empty()
            && local.chars().all(|c| {
                c.is_alphanumeric()
                    || "!#$%&'*+-/=?^_`{|}~.".contains(c)
                    || (c == ' ' && quoted.is_some())
            });
        let domain_ok = match self
            .domain
            .strip_prefix('[')
            .and_then(|d| d.strip_suffix(']'))
        {
            Some(literal) => literal
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == ':'),
            None => self
                .domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.'),
        };
        local_ok && domain_ok
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

fn valid_local(local: &str) -> bool {
    if let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        // Quoted string: printable characters, backslash escapes allowed (§4.1.2).
        return !inner.chars().any(|c| c.is_control());
    }
    !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii())
}

fn valid_domain(domain: &str) -> bool {
    if domain.starts_with('[') && domain.ends_with(']') {
        // Address literal (§4.1.3); accepted syntactically, never a local domain.
        return domain.len() > 2 && !domain[1..domain.len() - 1].chars().any(|c| c.is_control());
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii())
    })
}

/// BODY= parameter of MAIL FROM (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// `None` is the null reverse-path `<>` used by bounces.
    pub sender: Option<Address>,
    /// SIZE= declared by the client (RFC 1870).
    pub size: Option<u64>,
    pub body: Body,
    /// SMTPUTF8 parameter (RFC 6531).
    pub smtputf8: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    pub recipient: Address,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// AUTH mechanism [initial-response] (RFC 4954 §4).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
}

/// Parses one command line (without CRLF). NUL bytes and non-UTF-8 are refused here so
/// later layers only see text.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    if line.contains(&0) {
        return Err(reply::NUL_IN_COMMAND);
    }
    let line = std::str::from_utf8(line).map_err(|_| reply::SYNTAX_ERROR)?;
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let no_args = |cmd: Command| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(reply::UNEXPECTED_PARAMETERS)
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => parse_domain_arg(rest).map(Command::Ehlo),
        "HELO" => parse_domain_arg(rest).map(Command::Helo),
        "MAIL" => parse_mail(rest).map(Command::Mail),
        "RCPT" => parse_rcpt(rest).map(Command::Rcpt),
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        // NOOP, VRFY and HELP may carry an argument that is ignored (§4.1.1.9, §4.1.1.8).
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => {
            if rest.trim().is_empty() {
                Err(reply::VRFY_NEEDS_ARGUMENT)
            } else {
                Ok(Command::Vrfy)
            }
        }
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(Command::StartTls),
        "AUTH" => parse_auth(rest),
        "" => Err(reply::SYNTAX_ERROR),
        "EXPN" | "TURN" | "ETRN" | "BDAT" | "SEND" | "SOML" | "SAML" => Err(reply::NOT_IMPLEMENTED),
        _ => Err(reply::SYNTAX_ERROR),
    }
}

fn parse_domain_arg(rest: &str) -> Result<String, Reply> {
    let arg = rest.trim();
    if arg.is_empty() || arg.contains(char::is_whitespace) {
        return Err(reply::HELLO_SYNTAX);
    }
    Ok(arg.to_string())
}

/// Splits `FROM:<path> params` / `TO:<path> params` into the path and its parameters.
fn split_path<'a>(rest: &'a str, keyword: &str) -> Result<(&'a str, &'a str), Reply> {
    let syntax = || match keyword {
        "FROM" => reply::MAIL_SYNTAX,
        _ => reply::RCPT_SYNTAX,
    };
    let head = rest.get(..keyword.len() + 1).ok_or_else(syntax)?;
    if !head.eq_ignore_ascii_case(&format!("{keyword}:")) {
        return Err(syntax());
    }
    // Some clients put a space after the colon; accepted as Postfix does.
    let after = rest[keyword.len() + 1..].trim_start();
    if !after.starts_with('<') {
        return Err(syntax());
    }
    let close = after.find('>').ok_or_else(syntax)?;
    let path = &after[1..close];
    let params = &after[close + 1..];
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(syntax());
    }
    Ok((path, params.trim()))
}

/// Drops an obsolete source route `@a,@b:` (RFC 5321 §4.1.2, Appendix C).
fn strip_source_route(path: &str) -> &str {
    if path.starts_with('@') {
        path.split_once(':').map(|(_, p)| p).unwrap_or(path)
    } else {
        path
    }
}

fn parse_mail(rest: &str) -> Result<MailFrom, Reply> {
    let (path, params) = split_path(rest, "FROM")?;
    let sender = if path.is_empty() {
        None
    } else {
        Some(Address::parse(strip_source_route(path)).ok_or(reply::BAD_SENDER_SYNTAX)?)
    };
    let mut mail = MailFrom {
        sender,
        size: None,
        body: Body::SevenBit,
        smtputf8: false,
    };
    for param in params.split_ascii_whitespace() {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) => mail.size = Some(v.parse().map_err(|_| reply::BAD_SIZE)?),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                mail.body = Body::EightBitMime
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => mail.body = Body::SevenBit,
            ("BODY", _) => return Err(reply::BAD_BODY_TYPE),
            ("SMTPUTF8", None) => mail.smtputf8 = true,
            // RFC 4954 §5: AUTH= on MAIL is accepted and not trusted.
            ("AUTH", Some(_)) => {}
            _ => return Err(reply::UNKNOWN_PARAMETER),
        }
    }
    if let Some(sender) = &mail.sender
        && !sender.is_ascii()
        && !mail.smtputf8
    {
        return Err(reply::SMTPUTF8_REQUIRED);
    }
    Ok(mail)
}

fn parse_rcpt(rest: &str) -> Result<RcptTo, Reply> {
    let (path, params) = split_path(rest, "TO")?;
    if !params.is_empty() {
        return Err(reply::UNKNOWN_PARAMETER);
    }
    let recipient = Address::parse(strip_source_route(path)).ok_or(reply::BAD_RECIPIENT_SYNTAX)?;
    Ok(RcptTo { recipient })
}

fn parse_auth(rest: &str) -> Result<Command, Reply> {
    let mut parts = rest.split_ascii_whitespace();
    let mechanism = parts.next().ok_or(reply::AUTH_SYNTAX)?.to_ascii_uppercase();
    let initial = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return Err(reply::AUTH_SYNTAX);
    }
    Ok(Command::Auth { mechanism, initial })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn header_safe_addresses() {
        for safe in [
            "bob@example.test",
            "o'brien+tag@example.test",
            "\"john doe\"@example.test",
            "\"a..b\"@example.test",
            "jürgen@bücher.test",
            "x@[192.0.2.1]",
            "x@[IPv6:2001:db8::1]",
        ] {
            assert!(addr(safe).is_header_safe(), "{safe}");
        }
        // Valid for RFC 5321 (or for Address::parse), unsafe to write as they are.
        for unsafe_ in [
            "\"a>b\"@example.test",
            "\"a,b\"@example.test",
            "\"a\"b\"@example.test",
            "\"a\\b\"@example.test",
            "\"<x@evil.test>\"@example.test",
            "\"\"@example.test",
            "a\u{85}b@example.test",
            "a\u{2028}b@example.test",
            "x@[1.2.3.4>,evil]",
            "x@exa\u{85}mple.test",
        ] {
            assert!(!addr(unsafe_).is_header_safe(), "{unsafe_:?}");
        }
    }

    #[test]
    fn ehlo_and_helo() {
        assert_eq!(
            parse(b"EHLO client.test"),
            Ok(Command::Ehlo("client.test".into()))
        );
        assert_eq!(
            parse(b"helo client.test"),
            Ok(Command::Helo("client.test".into()))
        );
        assert_eq!(parse(b"EHLO").unwrap_err().code, 501);
        assert_eq!(parse(b"EHLO a b").unwrap_err().code, 501);
    }

    #[test]
    fn mail_from_with_parameters() {
        let cmd =
            parse(b"MAIL FROM:<Alice@Example.TEST> SIZE=1000 BODY=8BITMIME SMTPUTF8").unwrap();
        assert_eq!(
            cmd,
            Command::Mail(MailFrom {
                sender: Some(Address {
                    local: "Alice".into(),
                    domain: "example.test".into()
                }),
                size: Some(1000),
                body: Body::EightBitMime,
                smtputf8: true,
            })
        );
        assert!(matches!(
            parse(b"mail from: <a@b.test>"),
            Ok(Command::Mail(_))
        ));
    }

    #[test]
    fn mail_from_null_sender_and_errors() {
        assert_eq!(
            parse(b"MAIL FROM:<>"),
            Ok(Command::Mail(MailFrom {
                sender: None,
                size: None,
                body: Body::SevenBit,
                smtputf8: false
            }))
        );
        assert_eq!(parse(b"MAIL FROM:a@b.test").unwrap_err().code, 501);
        assert_eq!(parse(b"MAIL FROM:<a@b.test> FOO=1").unwrap_err().code, 555);
        assert_eq!(parse(b"MAIL FROM:<a@b.test> SIZE=x").unwrap_err().code, 501);
        assert_eq!(parse(b"MAIL FROM:<not-an-address>").unwrap_err().code, 553);
        assert_eq!(parse(b"MAIL FROM:<a@b.test>junk").unwrap_err().code, 501);
        assert_eq!(
            parse("MAIL FROM:<j\u{f6}rg@b.test>".as_bytes())
                .unwrap_err()
                .code,
            553
        );
        assert!(parse("MAIL FROM:<j\u{f6}rg@b.test> SMTPUTF8".as_bytes()).is_ok());
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(
            parse(b"RCPT TO:<@relay.test:bob@example.test>"),
            Ok(Command::Rcpt(RcptTo {
                recipient: addr("bob@example.test")
            }))
        );
        assert_eq!(parse(b"RCPT TO:<>").unwrap_err().code, 553);
        assert_eq!(
            parse(b"RCPT TO:<a@b.test> NOTIFY=NEVER").unwrap_err().code,
            555
        );
        assert_eq!(parse(b"RCPT FROM:<a@b.test>").unwrap_err().code, 501);
    }

    #[test]
    fn simple_verbs() {
        assert_eq!(parse(b"DATA"), Ok(Command::Data));
        assert_eq!(parse(b"rset"), Ok(Command::Rset));
        assert_eq!(parse(b"NOOP anything"), Ok(Command::Noop));
        assert_eq!(parse(b"QUIT"), Ok(Command::Quit));
        assert_eq!(parse(b"VRFY bob"), Ok(Command::Vrfy));
        assert_eq!(parse(b"HELP"), Ok(Command::Help));
        assert_eq!(parse(b"STARTTLS"), Ok(Command::StartTls));
        assert_eq!(parse(b"DATA now").unwrap_err().code, 501);
        assert_eq!(parse(b"EXPN list").unwrap_err().code, 502);
        assert_eq!(parse(b"XYZZY").unwrap_err().code, 500);
        assert_eq!(parse(b"").unwrap_err().code, 500);
    }

    #[test]
    fn auth() {
        assert_eq!(
            parse(b"AUTH plain AGFAYg=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGFAYg==".into())
            })
        );
        assert_eq!(
            parse(b"AUTH LOGIN"),
            Ok(Command::Auth {
                mechanism: "LOGIN".into(),
                initial: None
            })
        );
        assert_eq!(parse(b"AUTH").unwrap_err().code, 501);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(
            parse(b"MAIL\0FROM:<a@b.test>").unwrap_err(),
            reply::NUL_IN_COMMAND
        );
        assert_eq!(parse(&[0xff, 0xfe, b'A']).unwrap_err().code, 500);
    }

    #[test]
    fn address_validation() {
        assert!(Address::parse("a..b@x.test").is_none());
        assert!(Address::parse("a@-x.test").is_none());
        assert!(Address::parse("a@x..test").is_none());
        assert!(Address::parse("\"a b\"@x.test").is_some());
        assert_eq!(addr("Bob@X.Test").key(), "bob@x.test");
    }
}
