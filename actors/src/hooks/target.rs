//! Where hooks may connect (`hook_policy`, issue 12).
//!
//! A hook is an HTTP request the server makes for whoever holds an admin key, so an
//! unchecked URL lets that key reach what only the server can: its loopback services,
//! the cloud metadata address (169.254.169.254), the private network behind it. By
//! default hooks reach public addresses only; `hook_policy.allowed_networks` lets an
//! operator open chosen networks (a spam filter on 127.0.0.1, a service on 10.20/16).
//!
//! The check is made on the address actually connected to: names go through
//! [`GuardedResolver`], which resolves them and hands reqwest only allowed addresses (so
//! a name that resolves to 127.0.0.1 is refused, and DNS rebinding gains nothing: there
//! is no second lookup); IP literals, which reqwest connects to without asking a
//! resolver, are checked by [`TargetPolicy::check_url`] before the request. A name is
//! checked when a connection is opened, and reqwest reuses pooled connections, so a new
//! policy (a reload) comes with a new client: nothing connected under the old policy is
//! used again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{ConfigError, HookPolicyConfig};

/// A kind of address that is not public: hooks reach it only when an allowed network
/// covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRange {
    /// 127.0.0.0/8, ::1: this host's own services.
    Loopback,
    /// 0.0.0.0/8, ::: connecting there reaches this host.
    Unspecified,
    /// 169.254.0.0/16 (cloud metadata services), fe80::/10.
    LinkLocal,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 (RFC 1918).
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    /// fc00::/7 (RFC 4193), and the deprecated site-local fec0::/10.
    UniqueLocal,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4, and IPv4-compatible IPv6 (::a.b.c.d): not routable.
    Reserved,
    /// Any other address: refused only with `hook_policy.only_allowed_networks`.
    Public,
}

impl AddressRange {
    /// How logs and errors name it.
    pub fn name(self) -> &'static str {
        match self {
            AddressRange::Loopback => "loopback",
            AddressRange::Unspecified => "unspecified",
            AddressRange::LinkLocal => "link-local",
            AddressRange::Private => "private",
            AddressRange::SharedAddressSpace => "shared address space (CGNAT)",
            AddressRange::UniqueLocal => "unique-local",
            AddressRange::Multicast => "multicast",
            AddressRange::Broadcast => "broadcast",
            AddressRange::Reserved => "reserved",
            AddressRange::Public => "public",
        }
    }
}

/// The range `ip` belongs to, or `None` for a public address. IPv6 forms that carry an
/// IPv4 address (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`)
/// are judged by that IPv4 address.
pub fn classify(ip: IpAddr) -> Option<AddressRange> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressRange> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        (0, _) => AddressRange::Unspecified,
        (127, _) => AddressRange::Loopback,
        (10, _) | (172, 16..=31) | (192, 168) => AddressRange::Private,
        (100, 64..=127) => AddressRange::SharedAddressSpace,
        (169, 254) => AddressRange::LinkLocal,
        (224..=239, _) => AddressRange::Multicast,
        _ if ip.is_broadcast() => AddressRange::Broadcast,
        (240..=255, _) => AddressRange::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressRange> {
    let first = ip.segments()[0];
    Some(if ip.is_unspecified() {
        AddressRange::Unspecified
    } else if ip.is_loopback() {
        AddressRange::Loopback
    } else if first & 0xffc0 == 0xfe80 {
        AddressRange::LinkLocal
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        AddressRange::UniqueLocal
    } else if first & 0xff00 == 0xff00 {
        AddressRange::Multicast
    } else if ip.segments()[..6] == [0; 6] {
        // IPv4-compatible (::a.b.c.d, deprecated by RFC 4291).
        AddressRange::Reserved
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address stands for: mapped (::ffff:0:0/96), NAT64
/// (64:ff9b::/96, RFC 6052) and 6to4 (2002::/16, RFC 3056).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(v4(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

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
    fn every_non_public_range_is_named() {
        use AddressRange::*;
        let cases = [
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("::1", Loopback),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("::", Unspecified),
            ("169.254.169.254", LinkLocal),
            ("fe80::1", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fec0::1", UniqueLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("ff02::1", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("::7f00:1", Reserved),
        ];
        for (address, range) in cases {
            assert_eq!(classify(ip(address)), Some(range), "{address}");
        }
    }

    #[test]
    fn neighbours_of_the_ranges_are_public() {
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "126.255.255.255",
            "128.0.0.1",
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "fbff::1",
            "fe00::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(classify(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_as_ipv4() {
        use AddressRange::*;
        let cases = [
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:172.20.0.1", Private),
            ("::ffff:192.168.0.1", Private),
            ("::ffff:100.64.1.1", SharedAddressSpace),
            ("::ffff:224.0.0.1", Multicast),
            ("::ffff:255.255.255.255", Broadcast),
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("2002:c0a8:0101::1", Private),
            ("2002:7f00:0001::", Loopback),
        ];
        for (address, range) in cases {
            assert_eq!(classify(ip(address)), Some(range), "{address}");
        }
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
            allowed_networks: vec!["127.0.0.0/8".into(), "203.0.113.0/24".into()],
            only_allowed_networks: true,
            ..HookPolicyConfig::default()
        })
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(policy.check("h", ip("127.0.0.1")).is_ok());
        assert!(policy.check("h", ip("203.0.113.9")).is_ok());
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
