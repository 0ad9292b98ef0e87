//! `auth`: password checks (SMTP AUTH, API password hashing): how many run at once and
//! how failures are throttled.

use serde::Deserialize;

use super::{ConfigError, require_nonzero};

/// Password checks (SMTP AUTH, and password hashing in the API): how many run at once
/// on this node, and how failures are throttled per client address and per account.
/// Counters live in memory on each node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Password verifications (argon2id, ~19 MiB and ~20 ms of CPU each) running at
    /// once. 0 = one per CPU.
    pub max_concurrent_verifications: usize,
    /// Attempts that may wait (up to 2 s) for a verification slot; more get 454 4.7.0
    /// (SMTP) or 503 (API) at once. 0 = eight per slot.
    pub max_queued_verifications: usize,
    /// Failures from one client address (IPv6: its `smtp.limits.ipv6_prefix_length`
    /// network) within `failure_window_seconds` before it is locked out.
    pub max_failures_per_address: u32,
    /// Failures for one account, from anywhere, before the account is locked out for
    /// addresses that have not logged into it successfully in the last 30 days.
    pub max_failures_per_account: u32,
    /// How long failures are remembered, and the period of the audit summaries.
    pub failure_window_seconds: u64,
    /// How long a locked-out address or account gets 454 4.7.0 without a check.
    pub lockout_seconds: u64,
    /// The answer to a failed attempt is delayed by this, doubled with each further
    /// failure of the address in the window, up to `max_failure_delay_ms`.
    pub failure_delay_ms: u64,
    pub max_failure_delay_ms: u64,
    /// Failures after an address's first are audited as one `auth.login_failures`
    /// summary entry per address and period of this length.
    pub audit_summary_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_concurrent_verifications: 0,
            max_queued_verifications: 0,
            max_failures_per_address: 10,
            max_failures_per_account: 30,
            failure_window_seconds: 900,
            lockout_seconds: 900,
            failure_delay_ms: 250,
            max_failure_delay_ms: 5000,
            audit_summary_seconds: 60,
        }
    }
}

impl AuthConfig {
    /// `max_concurrent_verifications` with 0 resolved to the CPU count.
    pub fn verification_slots(&self) -> usize {
        match self.max_concurrent_verifications {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `max_queued_verifications` with 0 resolved to eight per slot.
    pub fn queued_verifications(&self) -> usize {
        match self.max_queued_verifications {
            0 => 8 * self.verification_slots(),
            n => n,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        require_nonzero(
            "auth",
            &[
                (
                    "max_failures_per_address",
                    u64::from(self.max_failures_per_address),
                ),
                (
                    "max_failures_per_account",
                    u64::from(self.max_failures_per_account),
                ),
                ("failure_window_seconds", self.failure_window_seconds),
                ("lockout_seconds", self.lockout_seconds),
                ("audit_summary_seconds", self.audit_summary_seconds),
            ],
        )?;
        if self.max_failure_delay_ms < self.failure_delay_ms {
            return Err(ConfigError::new(
                "auth.max_failure_delay_ms",
                "must be at least auth.failure_delay_ms",
            ));
        }
        Ok(())
    }
}
