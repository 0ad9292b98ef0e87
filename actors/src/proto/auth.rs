//! SASL decoding for AUTH PLAIN (RFC 4616) and AUTH LOGIN (draft-murchison-sasl-login).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::reply::{self, Reply};

/// Credentials from a client, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Decodes one base64 SASL response line. `*` cancels the exchange (RFC 4954 §4).
pub fn decode_response(line: &str) -> Result<Vec<u8>, Reply> {
    let line = line.trim();
    if line == "*" {
        return Err(reply::AUTH_CANCELLED);
    }
    if line == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(line).map_err(|_| reply::INVALID_BASE64)
}

/// PLAIN: `[authzid] NUL authcid NUL passwd`. An authzid other than the authcid is
/// refused: we do not let one user act as another.
pub fn decode_plain(response: &[u8]) -> Result<Credentials, Reply> {
    let mut parts = response.split(|b| *b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reply::INVALID_BASE64);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| reply::INVALID_BASE64);
    let username = text(authcid)?;
    if !authzid.is_empty() && authzid != authcid {
        return Err(reply::AUTH_FAILED);
    }
    Ok(Credentials {
        username,
        password: text(passwd)?,
    })
}

pub fn decode_text(response: Vec<u8>) -> Result<String, Reply> {
    String::from_utf8(response).map_err(|_| reply::INVALID_BASE64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let raw = decode_response(&STANDARD.encode(b"\0bob@x.test\0secret")).unwrap();
        assert_eq!(
            decode_plain(&raw).unwrap(),
            Credentials {
                username: "bob@x.test".into(),
                password: "secret".into()
            }
        );
        let raw = STANDARD.encode(b"alice@x.test\0bob@x.test\0secret");
        assert_eq!(
            decode_plain(&decode_response(&raw).unwrap()).unwrap_err(),
            reply::AUTH_FAILED
        );
        assert!(decode_plain(b"no-nuls").is_err());
    }

    #[test]
    fn responses() {
        assert_eq!(decode_response("*").unwrap_err(), reply::AUTH_CANCELLED);
        assert_eq!(decode_response("!!!").unwrap_err(), reply::INVALID_BASE64);
        assert_eq!(decode_response("=").unwrap(), Vec::<u8>::new());
        let challenge = |r: Reply| decode_text(decode_response(&r.text).unwrap()).unwrap();
        assert_eq!(challenge(reply::AUTH_LOGIN_USERNAME), "Username:");
        assert_eq!(challenge(reply::AUTH_LOGIN_PASSWORD), "Password:");
    }
}
