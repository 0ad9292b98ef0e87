//! `hooks` and `hook_policy`: the HTTP hooks called around receiving and sending
//! (SPEC M9), and where any hook may connect.

use serde::Deserialize;

use super::{ConfigError, after_http_scheme, parse_networks};

/// When a hook is called (SPEC M9).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// After DATA, before 250: may allow, reject (550 5.7.1), tempfail (451 4.7.1) or tag.
    PreReceive,
    /// After the message is stored; the answer is not awaited.
    PostReceive,
    /// Before a message with remote recipients is queued: may allow, reject or tempfail.
    PreSend,
}

/// What happens to the message when a hook cannot give an answer.
#[derive(
    Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HookFallback {
    #[default]
    Allow,
    Reject,
    Tempfail,
}

/// An HTTP hook (SPEC M9).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Names the hook in logs, metrics and the signature.
    pub id: String,
    pub event: HookEvent,
    pub url: String,
    /// HMAC-SHA256 key for `X-MaiRust-Signature`.
    pub secret: String,
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub on_timeout: HookFallback,
    /// Connection errors, non-2xx answers and unreadable answers.
    #[serde(default)]
    pub on_error: HookFallback,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker skips the hook before one trial call.
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_seconds: f64,
    #[serde(default = "super::yes")]
    pub enabled: bool,
}

fn default_hook_timeout_ms() -> u64 {
    2000
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_cooldown() -> f64 {
    30.0
}

impl HookConfig {
    /// Checks one hook; the error names the field. Used for config.yaml and the API.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let id_ok = (1..=64).contains(&self.id.len())
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !id_ok {
            return Err(("id", "1 to 64 letters, digits, '-', '_' or '.'"));
        }
        if !after_http_scheme(&self.url)
            .is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
        {
            return Err(("url", "must be an http:// or https:// URL"));
        }
        if self.secret.len() < 16 {
            return Err(("secret", "must be at least 16 characters"));
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err(("timeout_ms", "must be between 1 and 600000"));
        }
        if self.breaker_failures == 0 {
            return Err(("breaker_failures", "must be greater than 0"));
        }
        if !(self.breaker_cooldown_seconds.is_finite() && self.breaker_cooldown_seconds > 0.0) {
            return Err(("breaker_cooldown_seconds", "must be greater than 0"));
        }
        Ok(())
    }
}

/// Where every hook (config.yaml's and the API's) may connect, and how much of its
/// answer is read. A hook is an HTTP request the server makes for whoever holds an admin
/// key, so by default it reaches public addresses only: not the server's own loopback
/// services, the cloud metadata address (169.254.169.254) or the private network behind
/// it. The address checked is the one connected to, after DNS resolution.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookPolicyConfig {
    /// Networks hooks may reach although they are not public (loopback, private,
    /// link-local, unique-local, CGNAT, documentation, benchmarking, IETF protocol
    /// assignments, local-use NAT64, discard-only, multicast, reserved: see
    /// `hooks::AddressRange`): `127.0.0.1/32` for a filter on this host, `10.20.0.0/16`
    /// for a hook service on the internal network (a bare address means that address
    /// alone). Public addresses are allowed too unless `only_allowed_networks`.
    pub allowed_networks: Vec<String>,
    /// Hooks may reach `allowed_networks` only, public addresses included: an egress
    /// allow-list for installations whose hook services live at known addresses.
    pub only_allowed_networks: bool,
    /// Longest hook answer read, in bytes; a longer one is an error (`on_error`), so a
    /// hook cannot make the server buffer without end.
    pub max_response_bytes: usize,
}

impl Default for HookPolicyConfig {
    fn default() -> Self {
        HookPolicyConfig {
            allowed_networks: Vec::new(),
            only_allowed_networks: false,
            max_response_bytes: 64 * 1024,
        }
    }
}

/// Largest `hook_policy.max_response_bytes`: hook answers are a few hundred bytes.
pub const MAX_HOOK_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

impl HookPolicyConfig {
    /// `allowed_networks` parsed; the error names the entry (`hook_policy.allowed_networks[1]`).
    pub fn networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        parse_networks("hook_policy.allowed_networks", &self.allowed_networks)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.networks()?;
        if !(1..=MAX_HOOK_RESPONSE_BYTES).contains(&self.max_response_bytes) {
            return Err(ConfigError::new(
                "hook_policy.max_response_bytes",
                format!("must be between 1 and {MAX_HOOK_RESPONSE_BYTES}"),
            ));
        }
        Ok(())
    }
}

/// The `hooks` list: ids unique, each hook valid; the error names the entry
/// (`hooks[2].url`).
pub(super) fn validate_hooks(hooks: &[HookConfig]) -> Result<(), ConfigError> {
    let mut ids = std::collections::HashSet::new();
    for (i, h) in hooks.iter().enumerate() {
        if !ids.insert(h.id.as_str()) {
            return Err(ConfigError::new(format!("hooks[{i}].id"), "must be unique"));
        }
        h.validate()
            .map_err(|(field, reason)| ConfigError::new(format!("hooks[{i}].{field}"), reason))?;
    }
    Ok(())
}
