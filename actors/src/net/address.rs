//! Which clients count as one for per-address limits (sessions per address, DATA spool
//! shares, failed AUTH).

use std::net::{IpAddr, Ipv6Addr};

/// The key a client address is counted under: an IPv4 address as it is (also when it
/// arrives IPv4-mapped on an IPv6 socket), an IPv6 address reduced to its network of
/// `v6_prefix` bits, since one customer usually holds a whole /64 and could otherwise
/// open a fresh "client" per address.
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let prefix = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str, prefix: u8) -> String {
        client_key(s.parse().unwrap(), prefix).to_string()
    }

    #[test]
    fn ipv6_counts_by_prefix_ipv4_by_address() {
        assert_eq!(key("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff::9", 64), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:3::1", 64), "2001:db8:1:3::");
        assert_eq!(key("2001:db8:1:2:aaaa::1", 48), "2001:db8:1::");
        assert_eq!(key("2001:db8::1", 128), "2001:db8::1");
        assert_eq!(key("192.0.2.7", 64), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_eq!(key("::1", 64), "::");
    }
}
