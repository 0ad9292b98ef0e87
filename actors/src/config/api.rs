//! `http` and `api`: the HTTP listener, and what the REST API on it trusts (proxies
//! naming the client, browser origins) and how it throttles failed authentications.

use serde::Deserialize;

use super::{ConfigError, after_http_scheme, parse_addr, parse_networks};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    pub address: String,
    pub workers: usize,
    /// Open connections at most, over all workers; more wait in the listen backlog.
    /// Each may hold a request body of up to 1 MiB (more for `/send`, within
    /// `smtp.limits.max_message_size`) while it is read.
    pub max_connections: usize,
    /// HTTPS on `address` (API keys and, later, passwords cross it): the certificate
    /// and key, reloaded like `smtp.tls`'s.
    pub tls: Option<super::TlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            address: "127.0.0.1:8080".into(),
            workers: 2,
            max_connections: 256,
            tls: None,
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled {
            parse_addr("http.address", &self.address)?;
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "http.max_connections",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// The REST API (SPEC A1–A6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Failed authentications allowed per client address and minute; more get 429
    /// (a valid key is served all the same).
    pub auth_failures_per_minute: u32,
    /// Reverse proxies (addresses or networks) whose forwarding header names the client:
    /// behind a proxy every request comes from the proxy's address, so without this one
    /// client's failures would lock out everyone and the audit log would name the proxy.
    /// The header of any other peer is ignored (a client could write anything in it).
    pub trusted_proxies: Vec<String>,
    /// Which header a trusted proxy sets. One, not both: a client can send the other
    /// one, and a proxy that writes one passes the other through untouched.
    pub forwarded_header: ForwardedHeader,
    pub cors: CorsConfig,
    /// Browser sessions of signed-in users (the Admin UI).
    pub sessions: SessionConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            auth_failures_per_minute: 10,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            cors: CorsConfig::default(),
            sessions: SessionConfig::default(),
        }
    }
}

/// How long a browser session lasts (`api.sessions`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle_timeout_seconds: u64,
    /// A session ends this long after sign-in, however much it is used.
    pub lifetime_seconds: u64,
    /// Sessions one user may hold at once; signing in once more ends the oldest.
    pub max_per_user: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout_seconds: 1800,
            lifetime_seconds: 12 * 3600,
            max_per_user: 10,
        }
    }
}

/// Longest session lifetime accepted: 30 days.
const MAX_SESSION_SECONDS: u64 = 30 * 24 * 3600;

impl SessionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("lifetime_seconds", self.lifetime_seconds),
        ] {
            if !(1..=MAX_SESSION_SECONDS).contains(&value) {
                return Err(ConfigError::new(
                    format!("api.sessions.{key}"),
                    format!("must be between 1 and {MAX_SESSION_SECONDS} (30 days)"),
                ));
            }
        }
        if !(1..=1000).contains(&self.max_per_user) {
            return Err(ConfigError::new(
                "api.sessions.max_per_user",
                "must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}

impl ApiConfig {
    /// `trusted_proxies` parsed; the error names the entry (`api.trusted_proxies[0]`).
    pub fn trusted_proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        parse_networks("api.trusted_proxies", &self.trusted_proxies)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.trusted_proxy_networks()?;
        self.sessions.validate()?;
        self.cors.validate()
    }
}

/// The header a trusted proxy names the client in (`api.forwarded_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most balancers).
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// Browsers may call the API from these origins (an Admin UI); none by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// `https://admin.example.org` (scheme, host, optional port; no path, no `*`).
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer.
    pub max_age_seconds: u32,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            max_age_seconds: 3600,
        }
    }
}

impl CorsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if !after_http_scheme(origin)
                .is_some_and(|r| !r.is_empty() && !r.contains(['/', '*', ' ']))
            {
                return Err(ConfigError::new(
                    format!("api.cors.allowed_origins[{i}]"),
                    format!("`{origin}` is not an origin like https://admin.example.org"),
                ));
            }
        }
        Ok(())
    }
}
