//! `smtp`: the listeners (inbound, submission, submissions), their TLS certificate,
//! what authenticated clients may send (`submission`), and the limits every session
//! runs under.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, parse_addr, require_nonzero};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub listeners: Listeners,
    pub tls: Option<TlsConfig>,
    /// Offer AUTH on connections without TLS. Off by default: passwords in clear.
    pub allow_plaintext_auth: bool,
    /// Offer AUTH on the `inbound` (MX) listener too. Off by default: port 25 is where
    /// password guessers knock, and users submit on `submission`/`submissions`.
    pub auth_on_inbound: bool,
    /// Deprecated spelling of `submission.enforce_envelope_sender`, still read so one
    /// file serves nodes on both sides of the rename during a rolling upgrade.
    pub require_sender_match: Option<bool>,
    pub submission: SubmissionConfig,
    pub limits: SmtpLimits,
    /// Threads (actix arbiters) that run SMTP sessions; 0 = one per CPU minus one.
    pub workers: usize,
}

/// What an authenticated client (SMTP AUTH) may put in its mail (SPEC M3, S5): strict
/// by default, each check can be turned off for installations that need it (a gateway
/// relaying bounces, an application sending for many addresses). `POST /send` always
/// sends as an existing user and builds the From: header itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Accept `MAIL FROM:<>`. Off: the null sender is for the server's own bounces
    /// (RFC 5321 §4.5.5); from a user it only hides who sent the message.
    pub allow_null_sender: bool,
    /// MAIL FROM must be an address the account may use (its own). `None` when the key
    /// is absent: then the deprecated `smtp.require_sender_match`, else true; read it
    /// through [`SmtpConfig::enforce_envelope_sender`].
    pub enforce_envelope_sender: Option<bool>,
    /// The message must have exactly one From: header and every address in it must be
    /// one the account may use (checked at the end of DATA).
    pub enforce_from_header: bool,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        SubmissionConfig {
            allow_null_sender: false,
            enforce_envelope_sender: None,
            enforce_from_header: true,
        }
    }
}

impl SmtpConfig {
    /// `smtp.submission.enforce_envelope_sender`, else the deprecated
    /// `smtp.require_sender_match`, else true.
    pub fn enforce_envelope_sender(&self) -> bool {
        self.submission
            .enforce_envelope_sender
            .or(self.require_sender_match)
            .unwrap_or(true)
    }

    /// Keys that still work but should be renamed, with their new name.
    pub fn deprecated_keys(&self) -> Vec<(&'static str, &'static str)> {
        let mut keys = Vec::new();
        if self.require_sender_match.is_some() {
            keys.push((
                "smtp.require_sender_match",
                "smtp.submission.enforce_envelope_sender",
            ));
        }
        keys
    }

    /// The three listeners under their names in `smtp.listeners`.
    pub fn listener_list(&self) -> [(&'static str, &ListenerConfig); 3] {
        [
            ("inbound", &self.listeners.inbound),
            ("submission", &self.listeners.submission),
            ("submissions", &self.listeners.submissions),
        ]
    }

    /// Listener addresses, the certificate implicit TLS needs, the limits, and the
    /// submission settings against their deprecated spelling.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (name, l) in self.listener_list() {
            if l.enabled {
                parse_addr(&format!("smtp.listeners.{name}.address"), &l.address)?;
            }
            if let Some(proxy) = &l.proxy_protocol {
                if proxy.networks(name)?.is_empty() {
                    return Err(ConfigError::new(
                        format!("smtp.listeners.{name}.proxy_protocol.trusted"),
                        "list the proxies' addresses or networks",
                    ));
                }
                require_nonzero(
                    &format!("smtp.listeners.{name}.proxy_protocol"),
                    &[("timeout_seconds", proxy.timeout_seconds)],
                )?;
            }
        }
        if self.listeners.submissions.enabled && self.tls.is_none() {
            return Err(ConfigError::new(
                "smtp.listeners.submissions",
                "implicit TLS needs smtp.tls (cert_path, key_path)",
            ));
        }
        self.limits.validate()?;
        self.validate_submission()
    }

    fn validate_submission(&self) -> Result<(), ConfigError> {
        if let (Some(old), Some(new)) = (
            self.require_sender_match,
            self.submission.enforce_envelope_sender,
        ) && old != new
        {
            return Err(ConfigError::new(
                "smtp.require_sender_match",
                format!(
                    "deprecated spelling of smtp.submission.enforce_envelope_sender, and the two disagree ({old} and {new}): remove smtp.require_sender_match"
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    pub inbound: ListenerConfig,
    pub submission: ListenerConfig,
    pub submissions: ListenerConfig,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            inbound: ListenerConfig::new("127.0.0.1:2525", true),
            submission: ListenerConfig::new("127.0.0.1:2587", true),
            submissions: ListenerConfig::new("127.0.0.1:2465", false),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: String,
    #[serde(default = "super::yes")]
    pub enabled: bool,
    /// Load balancers in front of this listener that send a PROXY protocol header.
    pub proxy_protocol: Option<ProxyProtocolConfig>,
}

impl ListenerConfig {
    fn new(address: &str, enabled: bool) -> Self {
        ListenerConfig {
            address: address.into(),
            enabled,
            proxy_protocol: None,
        }
    }
}

/// PROXY protocol (v1 and v2) on one listener: a connection from a `trusted` network
/// must start with the header, and the client it names is the session's client (its
/// limits, Received header, SPF checks, logs). Connections from anyone else are served
/// as direct clients, and a PROXY header from them is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// Addresses or CIDR networks of the proxies (e.g. HAProxy's source address).
    pub trusted: Vec<String>,
    /// A trusted peer that has not sent its whole header by then is disconnected.
    #[serde(default = "default_proxy_timeout")]
    pub timeout_seconds: u64,
}

fn default_proxy_timeout() -> u64 {
    5
}

impl ProxyProtocolConfig {
    /// `trusted` parsed; the error names the entry.
    pub fn networks(&self, listener: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        super::parse_networks(
            &format!("smtp.listeners.{listener}.proxy_protocol.trusted"),
            &self.trusted,
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Create a self-signed certificate at the paths when they do not exist (development).
    #[serde(default)]
    pub self_signed: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpLimits {
    /// Bytes; larger messages get 552 5.3.4. Advertised in EHLO SIZE.
    pub max_message_size: usize,
    /// More RCPTs in one transaction get 452 4.5.3.
    pub max_recipients: usize,
    /// Longest command or DATA line, CRLF included.
    pub max_line_length: usize,
    /// Idle time allowed while waiting for a command (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout_seconds: u64,
    /// Idle time allowed between DATA chunks (RFC 5321 §4.5.3.2: 3 minutes).
    pub data_timeout_seconds: u64,
    /// Syntax errors and refused commands before the session is closed with 421.
    pub max_bad_commands: u32,
    /// Concurrent sessions over all listeners; more get 421 4.7.0.
    pub max_sessions: usize,
    /// Concurrent sessions from one client address; more get 421 4.7.0. IPv6 clients
    /// are counted by their `ipv6_prefix_length` network.
    pub max_sessions_per_ip: usize,
    /// IPv6 addresses count as one client per network of this prefix length (a single
    /// customer usually holds a whole /64); IPv4 addresses count one by one.
    pub ipv6_prefix_length: u8,
    /// A reply not taken by the client within this time ends the session (a client
    /// that pipelines commands and never reads must not hold its slot).
    pub write_timeout_seconds: u64,
    /// After the first `data_timeout_seconds` of DATA, the body must arrive at least
    /// this fast on average, or the session ends with 421 4.4.2 (no trickling); 0: no
    /// minimum.
    pub data_min_rate_bytes_per_second: u64,
    /// No session lasts longer than this, however busy (421 4.4.2 at the next read).
    pub max_session_seconds: u64,
    /// DATA bytes one session keeps in memory; beyond that the body is spooled to a
    /// temporary file in `spool_dir`.
    pub data_memory_bytes: usize,
    /// DATA bytes all sessions together keep in memory: half for bodies still arriving
    /// (a session that finds none left spools to disk), half for finished bodies on
    /// their way to storage (one that finds no room within `data_timeout_seconds` gets
    /// 451 4.3.2).
    pub max_inflight_data_bytes: usize,
    /// Where large bodies are spooled (unnamed files, gone when closed); the system's
    /// temporary directory when absent.
    pub spool_dir: Option<PathBuf>,
    /// Spooled bytes of all sessions together: a body that would pass it is discarded
    /// as it arrives and refused with 452 4.3.1 (no disk filling by withheld dots).
    pub max_spool_bytes: u64,
    /// Spooled bytes of one client address (IPv6: its prefix), so one client cannot
    /// take the whole spool from the others.
    pub max_spool_bytes_per_client: u64,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 4096,
            command_timeout_seconds: 300,
            data_timeout_seconds: 180,
            max_bad_commands: 20,
            max_sessions: 10_000,
            max_sessions_per_ip: 100,
            ipv6_prefix_length: 64,
            write_timeout_seconds: 60,
            data_min_rate_bytes_per_second: 500,
            max_session_seconds: 1800,
            data_memory_bytes: 256 * 1024,
            max_inflight_data_bytes: 256 * 1024 * 1024,
            spool_dir: None,
            max_spool_bytes: 2 * 1024 * 1024 * 1024,
            max_spool_bytes_per_client: 256 * 1024 * 1024,
        }
    }
}

impl SmtpLimits {
    fn validate(&self) -> Result<(), ConfigError> {
        require_nonzero(
            "smtp.limits",
            &[
                ("max_message_size", self.max_message_size as u64),
                ("max_recipients", self.max_recipients as u64),
                ("command_timeout_seconds", self.command_timeout_seconds),
                ("data_timeout_seconds", self.data_timeout_seconds),
                ("max_sessions", self.max_sessions as u64),
                ("max_sessions_per_ip", self.max_sessions_per_ip as u64),
                ("write_timeout_seconds", self.write_timeout_seconds),
                ("max_session_seconds", self.max_session_seconds),
                ("data_memory_bytes", self.data_memory_bytes as u64),
                (
                    "max_inflight_data_bytes",
                    self.max_inflight_data_bytes as u64,
                ),
            ],
        )?;
        if self.max_line_length < 1000 {
            return Err(ConfigError::new(
                "smtp.limits.max_line_length",
                "must be at least 1000 (RFC 5321 §4.5.3.1.6)",
            ));
        }
        if !(32..=128).contains(&self.ipv6_prefix_length) {
            return Err(ConfigError::new(
                "smtp.limits.ipv6_prefix_length",
                "must be between 32 and 128",
            ));
        }
        // Half holds finished bodies: one largest message and its Received header.
        let least = self
            .max_message_size
            .saturating_add(64 * 1024)
            .saturating_mul(2);
        if self.max_inflight_data_bytes < least {
            return Err(ConfigError::new(
                "smtp.limits.max_inflight_data_bytes",
                format!(
                    "must be at least {least}: twice smtp.limits.max_message_size plus 64 KiB (half of it holds finished bodies)"
                ),
            ));
        }
        for (key, value) in [
            ("max_spool_bytes", self.max_spool_bytes),
            (
                "max_spool_bytes_per_client",
                self.max_spool_bytes_per_client,
            ),
        ] {
            if value < self.max_message_size as u64 {
                return Err(ConfigError::new(
                    format!("smtp.limits.{key}"),
                    "must be at least smtp.limits.max_message_size (one whole message)",
                ));
            }
        }
        // Timeouts beyond a day are mistakes, and would overflow deadline arithmetic.
        for (key, value) in [
            ("command_timeout_seconds", self.command_timeout_seconds),
            ("data_timeout_seconds", self.data_timeout_seconds),
            ("write_timeout_seconds", self.write_timeout_seconds),
            ("max_session_seconds", self.max_session_seconds),
        ] {
            if value > 86_400 {
                return Err(ConfigError::new(
                    format!("smtp.limits.{key}"),
                    "must be at most 86400 (one day)",
                ));
            }
        }
        Ok(())
    }
}
