//! `database`: where the metadata lives (SQLite or PostgreSQL) and how the pool to it
//! behaves.

use serde::Deserialize;

use super::{ConfigError, require_nonzero};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` or `postgres://user@host:port/db`.
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Also bounds how long a query waits for a pool connection, so a dead database
    /// turns into a quick tempfail rather than a hang.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
}

fn default_max_connections() -> u32 {
    16
}

fn default_connect_timeout() -> u64 {
    3
}

impl DatabaseConfig {
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.is_sqlite() || self.url.starts_with("postgres")) {
            return Err(ConfigError::new(
                "database.url",
                "must start with sqlite: or postgres:",
            ));
        }
        require_nonzero(
            "database",
            &[("max_connections", u64::from(self.max_connections))],
        )
    }
}
