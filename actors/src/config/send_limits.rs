//! `send_limits`: how much mail an authenticated account (and all accounts of a domain
//! together) may send per hour.

use serde::Deserialize;

/// Per hour window; 0 means no limit. Counted across every node in the database.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SendLimitsConfig {
    /// Messages one account submits (SMTP AUTH, `POST /send`).
    pub messages_per_hour: u64,
    /// Recipients of those messages, all together.
    pub recipients_per_hour: u64,
    /// Messages all accounts of one domain submit together.
    pub domain_messages_per_hour: u64,
    pub domain_recipients_per_hour: u64,
}

impl Default for SendLimitsConfig {
    fn default() -> Self {
        SendLimitsConfig {
            messages_per_hour: 1000,
            recipients_per_hour: 5000,
            domain_messages_per_hour: 0,
            domain_recipients_per_hour: 0,
        }
    }
}

/// The largest limit taken (config and API): far past any real sending rate.
pub const MAX_SEND_LIMIT: u64 = 1_000_000_000_000;

impl SendLimitsConfig {
    pub(super) fn validate(&self) -> Result<(), super::ConfigError> {
        for (key, value) in [
            ("messages_per_hour", self.messages_per_hour),
            ("recipients_per_hour", self.recipients_per_hour),
            ("domain_messages_per_hour", self.domain_messages_per_hour),
            (
                "domain_recipients_per_hour",
                self.domain_recipients_per_hour,
            ),
        ] {
            if value > MAX_SEND_LIMIT {
                return Err(super::ConfigError::new(
                    format!("send_limits.{key}"),
                    format!("must be at most {MAX_SEND_LIMIT} (0: no limit)"),
                ));
            }
        }
        Ok(())
    }
}
