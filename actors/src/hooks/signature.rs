//! The signature a hook checks to know a request comes from this server and was not
//! replayed: `sha256=HMAC-SHA256(secret, timestamp + "\n" + hook_id + "\n" +
//! hex(sha256(body)))`, sent as `X-MaiRust-Signature` next to `X-MaiRust-Timestamp`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::storage::envelope::hex;

/// The signature header value for a request body.
pub fn signature(secret: &str, timestamp: i64, hook_id: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}\n{hook_id}\n{}", hex(&Sha256::digest(body))).as_bytes());
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_hook_and_body() {
        let a = signature("0123456789abcdef", 1_700_000_000, "h", b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature("0123456789abcdef", 1_700_000_001, "h", b"{}"));
        assert_ne!(a, signature("0123456789abcdef", 1_700_000_000, "g", b"{}"));
        assert_ne!(a, signature("0123456789abcdef", 1_700_000_000, "h", b"{ }"));
        assert_ne!(a, signature("fedcba9876543210", 1_700_000_000, "h", b"{}"));
    }
}
