//! `logging`: level, format, and the log file with its size-based rotation.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// trace, debug, info, warn or error (or a tracing filter directive).
    pub level: String,
    pub format: LogFormat,
    /// Log to this file instead of standard output, rotated by size.
    pub file: Option<PathBuf>,
    pub rotation: RotationConfig,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
            file: None,
            rotation: RotationConfig::default(),
        }
    }
}

impl LoggingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.rotation.validate()?;
        if !matches!(
            self.level.as_str(),
            "trace" | "debug" | "info" | "warn" | "error"
        ) && !self.level.contains('=')
        {
            return Err(ConfigError::new(
                "logging.level",
                "must be trace, debug, info, warn, error or a filter directive",
            ));
        }
        Ok(())
    }
}

/// Size-based rotation of `logging.file`: `mairust.log` → `mairust.log.1(.gz)` → ...
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Rotate once the file passes this size (fractions allowed).
    pub max_size_mb: f64,
    /// Rotated files kept; older ones are deleted.
    pub max_files: usize,
    /// gzip rotated files.
    pub compress: bool,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            max_size_mb: 100.0,
            max_files: 10,
            compress: true,
        }
    }
}

impl RotationConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.max_size_mb.is_finite() && self.max_size_mb > 0.0) {
            return Err(ConfigError::new(
                "logging.rotation.max_size_mb",
                "must be greater than 0",
            ));
        }
        if self.max_files == 0 {
            return Err(ConfigError::new(
                "logging.rotation.max_files",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
