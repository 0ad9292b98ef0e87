//! `command::parse` on arbitrary lines.
//!
//! Properties: a refusal is a well-formed reply; NUL and non-UTF-8 are always refused;
//! the verb is case-insensitive and trailing blanks do not matter; an accepted command
//! formats without panicking and keeps its documented invariants (domain lowercase,
//! length limits, SMTPUTF8 for non-ASCII senders, AUTH mechanism uppercase); an
//! accepted address prints to a form that parses back to the same address and the
//! same command. Any text in a reply stays on its own reply lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mairust_fuzz::check;
use mairust_fuzz::proto::command::{self, Address, Body, Command};
use mairust_fuzz::proto::reply::{self, Reply};

fuzz_target!(|line: &[u8]| {
    let result = command::parse(line);
    let _ = format!("{result:?}");

    if line.contains(&0) {
        assert_eq!(result, Err(reply::NUL_IN_COMMAND));
    } else if std::str::from_utf8(line).is_err() {
        assert_eq!(result, Err(reply::SYNTAX_ERROR));
    }

    // The verb (up to the first space) is case-insensitive.
    let verb_end = line.iter().position(|b| *b == b' ').unwrap_or(line.len());
    let mut flipped = line.to_vec();
    for b in &mut flipped[..verb_end] {
        if b.is_ascii_alphabetic() {
            *b ^= 0x20;
        }
    }
    assert_eq!(
        command::parse(&flipped),
        result,
        "verb case changed the outcome"
    );

    // Trailing blanks are ignored.
    let mut padded = line.to_vec();
    padded.extend_from_slice(b" \t ");
    assert_eq!(
        command::parse(&padded),
        result,
        "trailing blanks changed the outcome"
    );

    match &result {
        Err(r) => check::reply_wire(r),
        Ok(cmd) => accepted(cmd),
    }

    // Reply text from anywhere (a client's words echoed back) cannot inject a line.
    let text = String::from_utf8_lossy(line);
    check::reply_wire(&Reply::dynamic(550, "5.1.1", text.clone()));
    check::reply_wire(&Reply::plain(250, text));
});

fn accepted(cmd: &Command) {
    match cmd {
        Command::Ehlo(host) | Command::Helo(host) => {
            assert!(
                !host.is_empty() && !host.contains(char::is_whitespace),
                "{host:?}"
            );
        }
        Command::Mail(mail) => {
            if let Some(sender) = &mail.sender {
                address(sender);
                assert!(
                    sender.is_ascii() || mail.smtputf8,
                    "non-ASCII sender without SMTPUTF8"
                );
            }
            // The canonical form of the command parses back to the same command.
            let mut canon = match &mail.sender {
                Some(a) => format!("MAIL FROM:<{a}>"),
                None => "MAIL FROM:<>".to_string(),
            };
            if let Some(size) = mail.size {
                canon.push_str(&format!(" SIZE={size}"));
            }
            if mail.body == Body::EightBitMime {
                canon.push_str(" BODY=8BITMIME");
            }
            if mail.smtputf8 {
                canon.push_str(" SMTPUTF8");
            }
            assert_eq!(
                command::parse(canon.as_bytes()).as_ref(),
                Ok(cmd),
                "{canon:?}"
            );
        }
        Command::Rcpt(rcpt) => {
            address(&rcpt.recipient);
            let canon = format!("RCPT TO:<{}>", rcpt.recipient);
            assert_eq!(
                command::parse(canon.as_bytes()).as_ref(),
                Ok(cmd),
                "{canon:?}"
            );
        }
        Command::Auth { mechanism, initial } => {
            assert!(!mechanism.is_empty(), "empty mechanism");
            assert_eq!(*mechanism, mechanism.to_ascii_uppercase());
            assert!(!mechanism.contains(|c: char| c.is_ascii_whitespace()));
            if let Some(initial) = initial {
                assert!(
                    !initial.is_empty() && !initial.contains(|c: char| c.is_ascii_whitespace())
                );
            }
        }
        Command::Data
        | Command::Rset
        | Command::Noop
        | Command::Quit
        | Command::Vrfy
        | Command::Help
        | Command::StartTls => {}
    }
}

fn address(a: &Address) {
    assert!(!a.local.is_empty() && a.local.len() <= 64, "{a:?}");
    assert!(!a.domain.is_empty() && a.domain.len() <= 255, "{a:?}");
    assert_eq!(
        a.domain,
        a.domain.to_ascii_lowercase(),
        "domain not lowercased"
    );
    assert!(!a.domain.contains('@'), "{a:?}");
    assert!(!a.to_string().contains(['\r', '\n', '\0', '>']), "{a:?}");
    let _ = a.key();
    assert_eq!(
        Address::parse(&a.to_string()).as_ref(),
        Some(a),
        "address does not round-trip"
    );
}
