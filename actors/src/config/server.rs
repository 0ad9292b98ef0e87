//! `server`: what names this node (its host name) and how it stops (shutdown grace
//! periods, the pid file `mairust reload` signals).

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Name used in the greeting, EHLO reply and Received headers.
    pub hostname: String,
    pub shutdown: ShutdownConfig,
    /// `serve` writes its process id here (removed at exit); `mairust reload` reads it.
    pub pid_file: Option<PathBuf>,
    /// How often the TLS certificate files (`smtp.tls`, `http.tls`) are checked for a
    /// renewal, which is then served without a restart; 0: only on SIGHUP.
    pub certificate_check_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            shutdown: ShutdownConfig::default(),
            pid_file: None,
            certificate_check_seconds: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long running SMTP sessions may go on after SIGTERM before they get 421.
    pub timeout_seconds: u64,
    /// How long queue workers may finish in-flight deliveries after SIGTERM.
    pub drain_timeout_seconds: u64,
    /// Between SIGTERM and the listeners closing: `/health/ready` already answers 503
    /// and new connections are still served, so load balancers take the node out
    /// before it refuses anyone.
    pub close_delay_seconds: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout_seconds: 60,
            drain_timeout_seconds: 30,
            close_delay_seconds: 0,
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err(ConfigError::new("server.hostname", "must be a host name"));
        }
        if self.shutdown.close_delay_seconds > 3600 {
            return Err(ConfigError::new(
                "server.shutdown.close_delay_seconds",
                "at most 3600",
            ));
        }
        Ok(())
    }
}
