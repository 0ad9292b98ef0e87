//! SASL decoding: `auth::decode_response`, `decode_plain` and `decode_text`.
//!
//! The input is used three ways: as a response line (lossy UTF-8), as decoded PLAIN
//! bytes, and as the payload a client would base64-encode.
//!
//! Properties:
//! - a response line is `*` (cancel), `=` (empty), or canonical base64 that re-encodes
//!   to exactly the trimmed line; anything else is refused as invalid base64;
//! - any payload, base64-encoded and padded with blanks, decodes back to itself;
//! - PLAIN accepts exactly `[authzid] NUL authcid NUL passwd` with UTF-8 authcid and
//!   passwd and an authzid that is empty or the authcid, and the credentials rebuild the
//!   input; a different authzid fails authentication, anything else is invalid;
//! - `decode_text` accepts exactly UTF-8 and returns the same bytes;
//! - every refusal is a well-formed reply.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use mairust_fuzz::check;
use mairust_fuzz::proto::auth::{self, Credentials};
use mairust_fuzz::proto::reply;

fuzz_target!(|data: &[u8]| {
    // As a response line.
    let line = String::from_utf8_lossy(data);
    let decoded = auth::decode_response(&line);
    let trimmed = line.trim();
    match &decoded {
        Ok(bytes) if trimmed == "=" => assert!(bytes.is_empty()),
        Ok(bytes) => assert_eq!(
            STANDARD.encode(bytes),
            trimmed,
            "non-canonical base64 accepted"
        ),
        Err(r) if trimmed == "*" => assert_eq!(*r, reply::AUTH_CANCELLED),
        Err(r) => {
            assert_eq!(*r, reply::INVALID_BASE64);
            assert!(STANDARD.decode(trimmed).is_err());
        }
    }
    if let Ok(bytes) = decoded {
        plain(&bytes);
        text(bytes);
    }

    // As a payload a client encodes.
    let encoded = format!(" \t{}\t ", STANDARD.encode(data));
    assert_eq!(auth::decode_response(&encoded).as_deref(), Ok(data));

    // As decoded bytes.
    plain(data);
    text(data.to_vec());
});

fn plain(raw: &[u8]) {
    let result = auth::decode_plain(raw);
    let parts: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let expected = match parts[..] {
        [authzid, authcid, passwd] => match std::str::from_utf8(authcid) {
            Err(_) => Err(reply::INVALID_BASE64),
            Ok(_) if !authzid.is_empty() && authzid != authcid => Err(reply::AUTH_FAILED),
            Ok(user) => match std::str::from_utf8(passwd) {
                Ok(pass) => Ok(Credentials {
                    username: user.into(),
                    password: pass.into(),
                }),
                Err(_) => Err(reply::INVALID_BASE64),
            },
        },
        _ => Err(reply::INVALID_BASE64),
    };
    assert_eq!(result, expected);
    match result {
        Ok(c) => {
            // The credentials rebuild the input, with or without the authzid.
            let bare = format!("\0{}\0{}", c.username, c.password);
            let full = format!("{}{bare}", c.username);
            assert!(raw == bare.as_bytes() || raw == full.as_bytes());
        }
        Err(r) => check::reply_wire(&r),
    }
}

fn text(raw: Vec<u8>) {
    let utf8 = std::str::from_utf8(&raw).is_ok();
    match auth::decode_text(raw.clone()) {
        Ok(s) => assert_eq!(s.as_bytes(), &raw[..]),
        Err(r) => {
            assert!(!utf8, "valid UTF-8 refused");
            assert_eq!(r, reply::INVALID_BASE64);
            check::reply_wire(&r);
        }
    }
}
