//! `queue`: the outbound queue's workers, claims, batches and retry schedule.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, require_nonzero, require_positive};

/// The outbound queue (SPEC M6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// QueueWorkers on this node; 0 = this node delivers nothing (it still queues).
    pub workers: usize,
    /// Entries one worker claims at a time.
    pub batch_size: usize,
    /// How often an idle worker looks for due entries (other nodes' mail, retries).
    pub poll_interval_seconds: f64,
    /// How long a claim holds; a dead node's entries return after it. Renewed while the
    /// worker is still delivering.
    pub lease_seconds: f64,
    /// After this long in the queue, pending recipients are bounced.
    pub max_age_seconds: f64,
    /// Message bytes one worker loads at once: bodies are loaded per destination in
    /// slices of at most this size (one larger message alone); bodies later destinations
    /// of the batch need too are kept up to this size as well (about twice in all).
    pub max_batch_bytes: u64,
    pub retry: RetryConfig,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            workers: 4,
            batch_size: 64,
            poll_interval_seconds: 1.0,
            lease_seconds: 300.0,
            max_age_seconds: 5.0 * 86_400.0,
            max_batch_bytes: 64 * 1024 * 1024,
            retry: RetryConfig::default(),
        }
    }
}

impl QueueConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        require_positive(
            "queue",
            &[
                ("poll_interval_seconds", self.poll_interval_seconds),
                ("lease_seconds", self.lease_seconds),
                ("max_age_seconds", self.max_age_seconds),
            ],
        )?;
        self.retry.validate()?;
        require_nonzero(
            "queue",
            &[
                ("max_batch_bytes", self.max_batch_bytes),
                ("batch_size", self.batch_size as u64),
            ],
        )
    }
}

/// Delay before retry n (n = 1, 2 ...): `initial × factor^(n-1)`, at most `max`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub initial_seconds: f64,
    pub factor: f64,
    pub max_seconds: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_seconds: 300.0,
            factor: 2.0,
            max_seconds: 4.0 * 3600.0,
        }
    }
}

impl RetryConfig {
    /// The wait after the `attempts`-th failed attempt (1-based).
    pub fn delay(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let secs = (self.initial_seconds * self.factor.powi(exponent)).min(self.max_seconds);
        Duration::from_secs_f64(secs.max(0.0))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        require_positive(
            "queue.retry",
            &[
                ("initial_seconds", self.initial_seconds),
                ("max_seconds", self.max_seconds),
            ],
        )?;
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(ConfigError::new("queue.retry.factor", "must be at least 1"));
        }
        Ok(())
    }
}
