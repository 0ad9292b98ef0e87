//! `delivery`: how outbound mail reaches other servers (routes, smarthost, MX lookup
//! and its name servers, STARTTLS, timeouts).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, require_nonzero, require_positive};

/// STARTTLS on outbound connections.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// Use STARTTLS when the server offers it, without checking its certificate (the
    /// common practice between MTAs: RFC 7435), plain otherwise.
    #[default]
    Opportunistic,
    /// Never start TLS.
    Disabled,
}

/// How outbound mail reaches other servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Fixed next hops by recipient domain (`example.org: mx.example.org:25`), before
    /// the smarthost and MX lookup.
    pub routes: BTreeMap<String, String>,
    /// All other mail goes to this `host:port` instead of the domain's MX.
    pub smarthost: Option<String>,
    /// EHLO name; `server.hostname` when absent.
    pub helo_name: Option<String>,
    /// Port used for hosts found by MX lookup.
    pub mx_port: u16,
    pub connect_timeout_seconds: f64,
    /// Per command, and for the whole DATA transfer.
    pub command_timeout_seconds: f64,
    pub tls: OutboundTls,
    /// Messages sent over one connection before it is closed and a new one opened.
    pub max_messages_per_connection: usize,
    pub dns: DnsConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            routes: BTreeMap::new(),
            smarthost: None,
            helo_name: None,
            mx_port: 25,
            connect_timeout_seconds: 30.0,
            command_timeout_seconds: 300.0,
            tls: OutboundTls::Opportunistic,
            max_messages_per_connection: 100,
            dns: DnsConfig::default(),
        }
    }
}

impl DeliveryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        require_positive(
            "delivery",
            &[
                ("connect_timeout_seconds", self.connect_timeout_seconds),
                ("command_timeout_seconds", self.command_timeout_seconds),
            ],
        )?;
        require_nonzero(
            "delivery",
            &[(
                "max_messages_per_connection",
                self.max_messages_per_connection as u64,
            )],
        )?;
        for (domain, target) in &self.routes {
            check_host_port(&format!("delivery.routes.{domain}"), target)?;
        }
        if let Some(smarthost) = &self.smarthost {
            check_host_port("delivery.smarthost", smarthost)?;
        }
        self.dns.nameserver_addrs()?;
        Ok(())
    }
}

/// Name servers for MX lookups; the system's (`/etc/resolv.conf`) when empty.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// `IP` or `IP:port` entries.
    pub nameservers: Vec<String>,
}

impl DnsConfig {
    pub fn nameserver_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.nameservers
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        ConfigError::new(
                            "delivery.dns.nameservers",
                            format!("`{s}` is not an IP or IP:port"),
                        )
                    })
            })
            .collect()
    }
}

/// `host:port` with a port; the host may be a name or an IP (IPv6 in brackets).
fn check_host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(key, format!("`{value}` is not host:port")))
    }
}
