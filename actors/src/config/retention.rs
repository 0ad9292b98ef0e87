//! `retention`: when soft-deleted messages are purged, and in what steps.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Purging soft-deleted messages (SPEC M7). Every node runs the purge; the database
/// hands each batch to one node only (see `retention`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Mailbox entries deleted (through the API) longer ago than this are purged, and
    /// with them the messages and bodies nothing else refers to. 0: never purged.
    pub deleted_messages_days: u32,
    /// How often each node looks for entries to purge (and at start).
    pub purge_interval_seconds: f64,
    /// Entries purged per transaction: a large backlog goes in many short
    /// transactions, never one that holds the database.
    pub purge_batch_size: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            deleted_messages_days: 30,
            purge_interval_seconds: 3600.0,
            purge_batch_size: 500,
        }
    }
}

impl RetentionConfig {
    pub fn purge_interval(&self) -> Duration {
        Duration::from_secs_f64(self.purge_interval_seconds)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.deleted_messages_days > 36_500 {
            return Err(ConfigError::new(
                "retention.deleted_messages_days",
                "must be at most 36500 (100 years); 0 keeps deleted messages for ever",
            ));
        }
        let interval = self.purge_interval_seconds;
        if !(interval.is_finite() && interval > 0.0 && interval <= 86_400.0) {
            return Err(ConfigError::new(
                "retention.purge_interval_seconds",
                "must be greater than 0 and at most 86400 (one day)",
            ));
        }
        if !(1..=10_000).contains(&self.purge_batch_size) {
            return Err(ConfigError::new(
                "retention.purge_batch_size",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }
}
