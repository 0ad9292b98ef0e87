//! `dkim`: signing the mail our users submit (RFC 6376, RFC 8463) and where the key
//! that seals the private keys lives.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Header fields signed when a message has them. `From` is signed once more than it
/// occurs (RFC 6376 §8.15), so a From: added on the way breaks the signature.
pub const DEFAULT_SIGNED_HEADERS: [&str; 17] = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Sender",
];

/// Longest delay between a rotation and its new key signing: 90 days.
pub const MAX_DELAY_HOURS: u32 = 24 * 90;
/// Longest grace period of a rotated-out key.
pub const MAX_GRACE_DAYS: u32 = 365;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Sign mail submitted by our users (SMTP AUTH, `POST /send`) whose From: domain has
    /// a key. Off: mail leaves unsigned even where keys exist.
    pub sign: bool,
    /// 32 random bytes that seal every private key in the database (AES-256-GCM). Made
    /// (mode 0600) by the first `mairust dkim generate`. Every node sharing the database
    /// needs the same file; a backup of the database holds only sealed keys, so keep a
    /// copy of this file apart from it.
    pub master_key_file: PathBuf,
    /// Header fields signed when present.
    pub headers: Vec<String>,
    /// `dkim rotate`: hours between making the new key (whose record must be published)
    /// and signing with it; the old key signs until then.
    pub rotation_delay_hours: u32,
    /// `dkim rotate`: days the old key's record stays listed (for mail signed with it
    /// still in transit) after it stopped signing; then the key is removed.
    pub rotation_grace_days: u32,
}

impl Default for DkimConfig {
    fn default() -> Self {
        DkimConfig {
            sign: true,
            master_key_file: PathBuf::from("./data/dkim-master.key"),
            headers: DEFAULT_SIGNED_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            rotation_delay_hours: 48,
            rotation_grace_days: 7,
        }
    }
}

impl DkimConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.master_key_file.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "dkim.master_key_file",
                "must not be empty",
            ));
        }
        if !self.headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
            return Err(ConfigError::new(
                "dkim.headers",
                "must include From (RFC 6376 §5.4)",
            ));
        }
        if let Some(bad) = self
            .headers
            .iter()
            .find(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
        {
            return Err(ConfigError::new(
                "dkim.headers",
                format!("`{bad}` is not a header field name"),
            ));
        }
        if self.rotation_delay_hours > MAX_DELAY_HOURS {
            return Err(ConfigError::new(
                "dkim.rotation_delay_hours",
                format!("must be at most {MAX_DELAY_HOURS} (90 days)"),
            ));
        }
        if self.rotation_grace_days > MAX_GRACE_DAYS {
            return Err(ConfigError::new(
                "dkim.rotation_grace_days",
                format!("must be at most {MAX_GRACE_DAYS}"),
            ));
        }
        Ok(())
    }
}
