//! Where hooks may connect (`hook_policy`, issue 12).
//!
//! A hook is an HTTP request the server makes for whoever holds an admin key, so an
//! unchecked URL lets that key reach what only the server can: its loopback services,
//! the cloud metadata address (169.254.169.254), the private network behind it. By
//! default hooks reach public addresses only: every block of IANA's special-purpose
//! registries that is not globally reachable is refused ([`AddressRange`]).
//! `hook_policy.allowed_networks` lets an operator open chosen networks (a spam filter
//! on 127.0.0.1, a service on 10.20/16).
//!
//! The check is made on the address actually connected to: names go through
//! [`GuardedResolver`], which resolves them and hands reqwest only allowed addresses (so
//! a name that resolves to 127.0.0.1 is refused, and DNS rebinding gains nothing: there
//! is no second lookup); IP literals, which reqwest connects to without asking a
//! resolver, are checked by [`TargetPolicy::check_url`] before the request. A name is
//! checked when a connection is opened, and reqwest reuses pooled connections, so a new
//! policy (a reload) comes with a new client: nothing connected under the old policy is
//! used again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use super::address_range::{AddressRange, classify, embedded_v4};
use crate::config::{ConfigError, HookPolicyConfig};

/// Why a hook's target was not connected to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "hook target {host} refused: {address} is {} and not in hook_policy.allowed_networks",
    range.name()
)]
pub struct TargetRefused {
    /// The URL's host: a name, or the address itself.
    pub host: String,
    /// The (first) refused address.
    pub address: IpAddr,
    pub range: AddressRange,
}

/// `hook_policy` in force.
#[derive(Debug, Clone)]
pub struct TargetPolicy {
    allowed: Vec<IpNet>,
    /// Public addresses need an allowed network too (an egress allow-list).
    only_allowed: bool,
    /// Bytes of a hook's answer read at most.
    pub max_response_bytes: usize,
}

impl Default for TargetPolicy {
    fn default() -> Self {
        TargetPolicy {
            allowed: Vec::new(),
            only_allowed: false,
            max_response_bytes: HookPolicyConfig::default().max_response_bytes,
        }
    }
}

impl TargetPolicy {
    pub fn from_config(config: &HookPolicyConfig) -> Result<TargetPolicy, ConfigError> {
        config.validate()?;
        Ok(TargetPolicy {
            allowed: config.networks()?,
            only_allowed: config.only_allowed_networks,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// Whether a hook may connect to `ip`; `host` names the target in the refusal.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), TargetRefused> {
        let range = match classify(ip) {
            Some(range) => range,
            None if self.only_allowed => AddressRange::Public,
            None => return Ok(()),
        };
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = self
            .allowed
            .iter()
            .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)));
        if allowed {
            Ok(())
        } else {
            Err(TargetRefused {
                host: host.to_string(),
                address: ip,
                range,
            })
        }
    }

    /// Checks a URL whose host is an IP literal (reqwest connects to those without a
    /// resolver); a name passes here and is checked by [`GuardedResolver`].
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), TargetRefused> {
        let host = url.host_str().unwrap_or_default();
        // The url crate has already turned every IPv4 spelling (0x7f.1, 2130706433)
        // into dotted decimal, and keeps IPv6 in brackets.
        match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => self.check(host, ip),
            Err(_) => Ok(()),
        }
    }
}

/// reqwest's resolver for hooks: the system's lookup (tokio's `lookup_host`), keeping
/// only the addresses the policy allows. With none left the connection fails with
/// [`TargetRefused`] as its cause. It keeps the policy its client was built with: a new
/// policy comes with a new client and resolver (`Egress` in the dispatcher), because
/// the client's pooled connections are reused without asking the resolver again.
pub(super) struct GuardedResolver {
    pub(super) policy: Arc<TargetPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's (or the scheme's) port in.
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            match refused {
                Some(refusal) if allowed.is_empty() => Err(refusal.into()),
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The refusal behind a failed request, if that is why it failed.
pub(super) fn refusal_in(error: &reqwest::Error) -> Option<TargetRefused> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<TargetRefused>() {
            return Some(refused.clone());
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allowed: &[&str]) -> TargetPolicy {
        TargetPolicy::from_config(&HookPolicyConfig {
            allowed_networks: allowed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn allowing_an_ipv4_network_allows_its_siit_form_too() {
        let p = policy(&["127.0.0.0/8"]);
        assert!(p.check("x", ip("::ffff:0:127.0.0.1")).is_ok());
        let refused = policy(&[])
            .check("x", ip("::ffff:0:127.0.0.1"))
            .unwrap_err();
        assert_eq!(refused.range, AddressRange::Loopback);
        assert!(
            p.check("x", ip("64:ff9b:1::7f00:1")).is_err(),
            "local-use NAT64 needs its own network"
        );
        assert!(
            policy(&["64:ff9b:1::/48"])
                .check("x", ip("64:ff9b:1::7f00:1"))
                .is_ok()
        );
    }

    #[test]
    fn the_default_policy_refuses_and_names_the_address() {
        let p = policy(&[]);
        let refused = p.check("metadata.test", ip("169.254.169.254")).unwrap_err();
        assert_eq!(refused.address, ip("169.254.169.254"));
        assert_eq!(refused.range, AddressRange::LinkLocal);
        let text = refused.to_string();
        assert!(
            text.contains("metadata.test") && text.contains("169.254.169.254"),
            "{text}"
        );
        assert!(p.check("x", ip("::ffff:127.0.0.1")).is_err());
        assert!(p.check("x", ip("93.184.215.14")).is_ok());
    }

    #[test]
    fn only_allowed_networks_refuses_public_addresses_too() {
        let policy = TargetPolicy::from_config(&HookPolicyConfig {
            allowed_networks: vec!["127.0.0.0/8".into(), "93.184.215.0/24".into()],
            only_allowed_networks: true,
            ..HookPolicyConfig::default()
        })
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(policy.check("h", ip("127.0.0.1")).is_ok());
        assert!(policy.check("h", ip("93.184.215.14")).is_ok());
        let refused = policy.check("h", ip("8.8.8.8")).unwrap_err();
        assert_eq!(refused.range, AddressRange::Public);
        assert!(policy.check("h", ip("10.0.0.1")).is_err());
        let open = TargetPolicy::default();
        assert!(open.check("h", ip("8.8.8.8")).is_ok());
    }

    #[test]
    fn allowed_networks_open_what_they_cover_and_no_more() {
        let p = policy(&["127.0.0.0/8", "10.20.0.0/16", "fd00::5", "192.168.1.7"]);
        assert!(p.check("x", ip("127.0.0.1")).is_ok());
        assert!(p.check("x", ip("127.1.2.3")).is_ok());
        assert!(
            p.check("x", ip("::ffff:127.0.0.1")).is_ok(),
            "mapped form of an allowed address"
        );
        assert!(p.check("x", ip("10.20.3.4")).is_ok());
        assert!(p.check("x", ip("10.21.0.1")).is_err());
        assert!(p.check("x", ip("fd00::5")).is_ok(), "a bare address");
        assert!(p.check("x", ip("fd00::6")).is_err());
        assert!(p.check("x", ip("192.168.1.7")).is_ok());
        assert!(p.check("x", ip("192.168.1.8")).is_err());
        assert!(
            p.check("x", ip("::1")).is_err(),
            "IPv6 loopback not covered"
        );
        assert!(p.check("x", ip("169.254.169.254")).is_err());
    }

    #[test]
    fn ip_literal_urls_are_checked_in_every_spelling() {
        let p = policy(&[]);
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "https://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0:9/",
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert!(p.check_url(&parsed).is_err(), "{url}");
        }
        for url in ["http://93.184.215.14/", "https://hooks.example.org/x"] {
            assert!(p.check_url(&reqwest::Url::parse(url).unwrap()).is_ok());
        }
    }

    #[test]
    fn bad_networks_are_named_by_key() {
        let config = HookPolicyConfig {
            allowed_networks: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
            ..Default::default()
        };
        let err = TargetPolicy::from_config(&config).unwrap_err();
        assert_eq!(err.key, "hook_policy.allowed_networks[1]");
        let config = HookPolicyConfig {
            allowed_networks: vec!["localhost".into()],
            ..Default::default()
        };
        assert_eq!(
            config.validate().unwrap_err().key,
            "hook_policy.allowed_networks[0]"
        );
        let config = HookPolicyConfig {
            max_response_bytes: 0,
            ..Default::default()
        };
        assert_eq!(
            config.validate().unwrap_err().key,
            "hook_policy.max_response_bytes"
        );
        let unknown = serde_json::from_value::<HookPolicyConfig>(
            serde_json::json!({"allowed_network": ["10.0.0.0/8"]}),
        );
        assert!(unknown.is_err(), "a misspelt key is an error");
    }

    #[tokio::test]
    async fn names_that_resolve_to_refused_addresses_are_refused() {
        use reqwest::dns::Resolve;
        let resolver = GuardedResolver {
            policy: Arc::new(policy(&[])),
        };
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        let refused = err.downcast_ref::<TargetRefused>().expect("a refusal");
        assert_eq!(refused.host, "localhost");
        assert_eq!(refused.range, AddressRange::Loopback);

        let open = GuardedResolver {
            policy: Arc::new(policy(&["127.0.0.0/8", "::1"])),
        };
        let addrs: Vec<SocketAddr> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
