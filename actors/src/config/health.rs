//! `health`: how often the dependencies (database, storage) are probed and when one
//! counts as down.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between dependency probes.
    pub interval_seconds: f64,
    /// A probe slower than this counts as a failure.
    pub probe_timeout_seconds: f64,
    /// Consecutive failed probes before a dependency is marked down (SMTP tempfails).
    /// A failure seen by a caller only triggers probes at once; it never marks down.
    pub failures_before_down: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_seconds: 5.0,
            probe_timeout_seconds: 2.0,
            failures_before_down: 2,
        }
    }
}

impl HealthConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_seconds)
    }

    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.probe_timeout_seconds)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let seconds = |v: f64| v.is_finite() && v > 0.0 && v <= 86_400.0;
        if !(seconds(self.interval_seconds) && seconds(self.probe_timeout_seconds)) {
            return Err(ConfigError::new(
                "health",
                "interval and probe timeout must be > 0 and at most 86400 seconds",
            ));
        }
        if self.failures_before_down == 0 {
            return Err(ConfigError::new(
                "health.failures_before_down",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
