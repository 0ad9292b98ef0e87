//! `spam`: scanning mail with rspamd (its HTTP protocol, `/checkv2`).

use serde::Deserialize;

use super::ConfigError;

/// What a scan that could not be made (rspamd down, slow, or its breaker open) does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpamOnError {
    /// The message is taken unscanned.
    Accept,
    /// `451 4.7.1`: the client tries again later.
    Tempfail,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpamConfig {
    pub rspamd: RspamdConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RspamdConfig {
    /// rspamd's normal worker, e.g. `http://127.0.0.1:11333`; empty: no scanning.
    pub url: String,
    /// One scan at most (connection included); at most 600.
    pub timeout_seconds: f64,
    pub on_error: SpamOnError,
    /// Also scan what our users submit (SMTP AUTH, `POST /send`); mail from other
    /// servers is always scanned.
    pub scan_outbound: bool,
    /// Failed scans in a row that open the breaker: then no call is made (each message
    /// gets `on_error` at once) until `breaker_cooldown_seconds` passed and one trial
    /// scan succeeds.
    pub breaker_failures: u32,
    /// At most 86400 (one day).
    pub breaker_cooldown_seconds: f64,
}

impl Default for RspamdConfig {
    fn default() -> Self {
        RspamdConfig {
            url: String::new(),
            timeout_seconds: 10.0,
            on_error: SpamOnError::Accept,
            scan_outbound: false,
            breaker_failures: 5,
            breaker_cooldown_seconds: 30.0,
        }
    }
}

/// Longest scan: the ten minutes a client waits for the reply to its data.
const MAX_TIMEOUT_SECONDS: f64 = 600.0;
/// Longest time the breaker stays open before a trial scan.
const MAX_COOLDOWN_SECONDS: f64 = 86_400.0;

impl SpamConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.rspamd;
        if !r.url.is_empty() && super::after_http_scheme(&r.url).is_none_or(|rest| rest.is_empty())
        {
            return Err(ConfigError::new(
                "spam.rspamd.url",
                format!("`{}` is not an http:// or https:// URL", r.url),
            ));
        }
        super::require_positive(
            "spam.rspamd",
            &[
                ("timeout_seconds", r.timeout_seconds),
                ("breaker_cooldown_seconds", r.breaker_cooldown_seconds),
            ],
        )?;
        // Both become a `Duration`, which a value past 2^64 seconds does not fit (making
        // it would panic). A client waits ten minutes for the
        // reply to its data (RFC 5321 §4.5.3.2.6): a longer scan would answer nobody.
        if r.timeout_seconds > MAX_TIMEOUT_SECONDS {
            return Err(ConfigError::new(
                "spam.rspamd.timeout_seconds",
                "must be at most 600 (ten minutes)",
            ));
        }
        if r.breaker_cooldown_seconds > MAX_COOLDOWN_SECONDS {
            return Err(ConfigError::new(
                "spam.rspamd.breaker_cooldown_seconds",
                "must be at most 86400 (one day)",
            ));
        }
        super::require_nonzero(
            "spam.rspamd",
            &[("breaker_failures", r.breaker_failures.into())],
        )
    }
}
