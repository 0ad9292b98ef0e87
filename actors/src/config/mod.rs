//! The configuration model (SPEC O15): the types of `config.yaml`, their defaults, and
//! [`Config::validate`]. Finding the file and resolving `env:NAME` values is the
//! binary's job (`src/config.rs`); this module only describes and checks the result.
//!
//! One file per section (or per group of sections that belong together), each with
//! the checks of its own keys; [`Config::validate`] asks every section in turn. Every
//! struct denies unknown fields so a typo is an error that names the key, not a
//! silently ignored setting.
//!
//! - `server`: host name, shutdown, pid file.
//! - `smtp`: listeners, TLS, submission policy, session limits.
//! - `api`: the HTTP listener (`http`) and the REST API on it (`api`).
//! - `database`, `storage`: where metadata and message bodies live.
//! - `queue`, `delivery`: the outbound queue and how it reaches other servers.
//! - `hooks`: `hooks` and `hook_policy`.
//! - `dkim`: signing submitted mail, and the key that seals the private keys.
//! - `mail_auth`: SPF, DKIM, DMARC and ARC checks of mail from other servers.
//! - `spam`: scanning with rspamd.
//! - `send_limits`: messages and recipients per hour of accounts and domains.
//! - `auth`, `health`, `logging`, `telemetry`, `audit`, `retention`.

mod api;
mod audit;
mod auth;
mod database;
mod delivery;
mod dkim;
mod health;
mod hooks;
mod logging;
mod mail_auth;
mod queue;
mod retention;
mod send_limits;
mod server;
mod smtp;
mod spam;
mod storage;
mod telemetry;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use serde::Deserialize;

pub use api::{ApiConfig, CorsConfig, ForwardedHeader, HttpConfig, SessionConfig};
pub use audit::AuditConfig;
pub use auth::AuthConfig;
pub use database::DatabaseConfig;
pub use delivery::{DeliveryConfig, DnsConfig, OutboundTls};
pub use dkim::{DEFAULT_SIGNED_HEADERS, DkimConfig, MAX_DELAY_HOURS, MAX_GRACE_DAYS};
pub use health::HealthConfig;
pub use hooks::{HookConfig, HookEvent, HookFallback, HookPolicyConfig, MAX_HOOK_RESPONSE_BYTES};
pub use logging::{LogFormat, LoggingConfig, RotationConfig};
pub use mail_auth::{FailAction, MailAuthConfig};
pub use queue::{QueueConfig, RetryConfig};
pub use retention::RetentionConfig;
pub use send_limits::{MAX_SEND_LIMIT, SendLimitsConfig};
pub use server::{ServerConfig, ShutdownConfig};
pub use smtp::{
    ListenerConfig, Listeners, ProxyProtocolConfig, SmtpConfig, SmtpLimits, SubmissionConfig,
    TlsConfig,
};
pub use spam::{RspamdConfig, SpamConfig, SpamOnError};
pub use storage::{FsStorageConfig, S3StorageConfig, StorageBackend, StorageConfig};
pub use telemetry::{MetricsConfig, TelemetryConfig, TraceExporter, TracingConfig};

/// A configuration value that is present but wrong: `key` is the dotted path.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
    #[serde(default)]
    pub hook_policy: HookPolicyConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub dkim: DkimConfig,
    #[serde(default)]
    pub mail_auth: MailAuthConfig,
    #[serde(default)]
    pub spam: SpamConfig,
    #[serde(default)]
    pub send_limits: SendLimitsConfig,
}

impl Config {
    /// Checks what types alone cannot: addresses, ranges, and that the chosen storage
    /// backend has its section. The first wrong value found is the error; no check
    /// looks across sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.smtp.validate()?;
        self.http.validate()?;
        self.auth.validate()?;
        self.server.validate()?;
        self.database.validate()?;
        self.storage.validate()?;
        self.health.validate()?;
        self.queue.validate()?;
        self.delivery.validate()?;
        self.hook_policy.validate()?;
        hooks::validate_hooks(&self.hooks)?;
        self.logging.validate()?;
        self.telemetry.validate()?;
        self.audit.validate()?;
        self.api.validate()?;
        self.dkim.validate()?;
        self.mail_auth.validate()?;
        self.spam.validate()?;
        self.send_limits.validate()?;
        self.retention.validate()
    }
}

/// Networks (`10.20.0.0/16`) or single addresses (`192.0.2.7`, a /32 or /128), as
/// written under `key`; the error names the bad entry (`key[1]`).
pub fn parse_networks(key: &str, entries: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    ConfigError::new(
                        format!("{key}[{i}]"),
                        format!("`{s}` is not a network like 10.20.0.0/16 or an IP address"),
                    )
                })
        })
        .collect()
}

/// serde's default for switches that are on unless turned off (`enabled`, `fsync`).
fn yes() -> bool {
    true
}

/// A listening address: an IP and a port, no host name (nothing is resolved at bind).
fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(key, format!("`{value}` is not an IP:port address")))
}

/// Counts and durations under `section` that 0 would make meaningless; the error names
/// the first `(field, value)` that is 0.
fn require_nonzero(section: &str, fields: &[(&str, u64)]) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, value)| *value == 0) {
        Some((field, _)) => Err(ConfigError::new(
            format!("{section}.{field}"),
            "must be greater than 0",
        )),
        None => Ok(()),
    }
}

/// Like [`require_nonzero`] for fractional seconds, where NaN, infinities and negative
/// values are wrong as well.
fn require_positive(section: &str, fields: &[(&str, f64)]) -> Result<(), ConfigError> {
    match fields
        .iter()
        .find(|(_, value)| !(value.is_finite() && *value > 0.0))
    {
        Some((field, _)) => Err(ConfigError::new(
            format!("{section}.{field}"),
            "must be a number greater than 0",
        )),
        None => Ok(()),
    }
}

/// What follows `http://` or `https://` in `url`; `None` for any other scheme. Callers
/// check the rest as their key needs (an origin has no path, a hook URL no spaces).
fn after_http_scheme(url: &str) -> Option<&str> {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
}
