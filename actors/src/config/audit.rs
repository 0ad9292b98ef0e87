//! `audit`: the audit log file and how long the database keeps its entries.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// The audit log (SPEC O5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The append-only JSON-lines file; without it events go to the database only.
    pub path: Option<PathBuf>,
    /// Database entries older than this are pruned (the file is never rewritten).
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            retention_days: 180,
        }
    }
}

impl AuditConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=36_500).contains(&self.retention_days) {
            return Err(ConfigError::new(
                "audit.retention_days",
                "must be between 1 and 36500 (100 years)",
            ));
        }
        Ok(())
    }
}
