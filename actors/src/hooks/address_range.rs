//! The kinds of address that are not public, from IANA's IPv4 and IPv6 Special-Purpose
//! Address Registries (RFC 6890), and which of them an address belongs to: what
//! `hook_policy` ([`super::target`]) refuses unless an allowed network covers it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A kind of address that is not public: hooks reach it only when an allowed network
/// covers it. Built from IANA's IPv4 and IPv6 Special-Purpose Address Registries (RFC
/// 6890): every block there that is not globally reachable has a range here.
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
    /// 192.0.0.0/24 and 2001::/23, IETF protocol assignments (RFC 6890): DS-Lite, NAT64
    /// discovery, Teredo, ORCHID... Their few globally reachable members are anycast
    /// protocol services (PCP, TURN, AMT, AS112), none of them an HTTP hook, so the
    /// whole blocks are refused.
    ProtocolAssignments,
    /// 198.18.0.0/15 and 2001:2::/48, network benchmarking (RFC 2544, RFC 5180). Not
    /// routed on the internet; some local DNS proxies hand out 198.18/15 "fake" addresses
    /// that lead to themselves.
    Benchmarking,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 (RFC 5737), 2001:db8::/32 (RFC
    /// 3849), 3fff::/20 (RFC 9637): for examples only, so a hook there is a mistake or
    /// leads to whatever a local network put there.
    Documentation,
    /// 100::/64 (RFC 6666): traffic to it is dropped by design.
    DiscardOnly,
    /// 64:ff9b:1::/48 (RFC 8215): a NAT64 translator of this site. Where the IPv4
    /// address sits in it depends on the prefix length the site chose (RFC 6052 §2.2),
    /// so it cannot be judged by that address as 64:ff9b::/96 is.
    LocalUseNat64,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4; the deprecated 6to4 relay anycast 192.88.99.0/24 (RFC 7526); and IPv6
    /// outside global unicast (2000::/3) not named otherwise: IPv4-compatible
    /// (::a.b.c.d), SRv6 SIDs (5f00::/16), the IETF's unassigned space.
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
            AddressRange::ProtocolAssignments => "IETF protocol assignment",
            AddressRange::Benchmarking => "benchmarking",
            AddressRange::Documentation => "documentation",
            AddressRange::DiscardOnly => "discard-only",
            AddressRange::LocalUseNat64 => "local-use NAT64",
            AddressRange::Multicast => "multicast",
            AddressRange::Broadcast => "broadcast",
            AddressRange::Reserved => "reserved",
            AddressRange::Public => "public",
        }
    }
}

/// The range `ip` belongs to, or `None` for a public address. IPv6 forms that carry an
/// IPv4 address (mapped `::ffff:a.b.c.d`, SIIT-translated `::ffff:0:a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) are judged by that IPv4 address.
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
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => AddressRange::Unspecified,
        (127, ..) => AddressRange::Loopback,
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => AddressRange::Private,
        (100, 64..=127, _) => AddressRange::SharedAddressSpace,
        (169, 254, _) => AddressRange::LinkLocal,
        (192, 0, 0) => AddressRange::ProtocolAssignments,
        (198, 18..=19, _) => AddressRange::Benchmarking,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressRange::Documentation,
        (192, 88, 99) => AddressRange::Reserved,
        (224..=239, ..) => AddressRange::Multicast,
        _ if ip.is_broadcast() => AddressRange::Broadcast,
        (240..=255, ..) => AddressRange::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressRange> {
    let s = ip.segments();
    Some(if ip.is_unspecified() {
        AddressRange::Unspecified
    } else if ip.is_loopback() {
        AddressRange::Loopback
    } else if s[0] & 0xffc0 == 0xfe80 {
        AddressRange::LinkLocal
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        AddressRange::UniqueLocal
    } else if s[0] & 0xff00 == 0xff00 {
        AddressRange::Multicast
    } else if s[..4] == [0x100, 0, 0, 0] {
        AddressRange::DiscardOnly
    } else if s[..3] == [0x64, 0xff9b, 1] {
        AddressRange::LocalUseNat64
    } else if s[0] == 0x2001 && s[1] == 2 && s[2] == 0 {
        // Inside 2001::/23 too: the more specific name.
        AddressRange::Benchmarking
    } else if s[0] == 0x2001 && s[1] < 0x200 {
        AddressRange::ProtocolAssignments
    } else if (s[0] == 0x2001 && s[1] == 0xdb8) || (s[0] == 0x3fff && s[1] & 0xf000 == 0) {
        AddressRange::Documentation
    } else if s[0] & 0xe000 != 0x2000 {
        // Outside 2000::/3, the only block IANA allocates global unicast from.
        AddressRange::Reserved
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address stands for: mapped (::ffff:0:0/96, RFC 4291),
/// SIIT-translated (::ffff:0:0:0/96, RFC 2765), NAT64 (64:ff9b::/96, RFC 6052) and 6to4
/// (2002::/16, RFC 3056).
pub(super) fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(v4(hi, lo)),
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(v4(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Checks that every address is classified as `range` (`None`: public).
    fn assert_all(range: Option<AddressRange>, addresses: &[&str]) {
        for address in addresses {
            assert_eq!(classify(ip(address)), range, "{address}");
        }
    }

    /// Checks that each address is classified as the range paired with it.
    fn assert_each(cases: &[(&str, AddressRange)]) {
        for &(address, range) in cases {
            assert_eq!(classify(ip(address)), Some(range), "{address}");
        }
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
        assert_each(&cases);
    }

    #[test]
    fn ietf_protocol_assignments_are_not_public() {
        assert_all(
            Some(AddressRange::ProtocolAssignments),
            &[
                "192.0.0.0",
                "192.0.0.8",
                "192.0.0.9",
                "192.0.0.170",
                "192.0.0.255",
                "2001::1",
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                "2001:1::1",
                "2001:3::1",
                "2001:10::1",
                "2001:1ff:ffff::1",
            ],
        );
    }

    #[test]
    fn benchmarking_addresses_are_not_public() {
        assert_all(
            Some(AddressRange::Benchmarking),
            &["198.18.0.0", "198.18.0.1", "198.19.255.255", "2001:2::1"],
        );
        assert_eq!(
            classify(ip("2001:2:1::1")),
            Some(AddressRange::ProtocolAssignments),
            "past the /48, still in 2001::/23"
        );
    }

    #[test]
    fn documentation_addresses_are_not_public() {
        assert_all(
            Some(AddressRange::Documentation),
            &[
                "192.0.2.1",
                "192.0.2.255",
                "198.51.100.7",
                "203.0.113.0",
                "203.0.113.255",
                "2001:db8::1",
                "2001:db8:ffff:ffff::1",
                "3fff::1",
                "3fff:fff:ffff::1",
            ],
        );
    }

    #[test]
    fn discard_only_and_local_use_nat64_are_not_public() {
        assert_eq!(classify(ip("100::")), Some(AddressRange::DiscardOnly));
        assert_eq!(
            classify(ip("100::ffff:ffff:ffff:ffff")),
            Some(AddressRange::DiscardOnly)
        );
        // Whatever IPv4 address seems to sit in its last 32 bits, public or not.
        assert_all(
            Some(AddressRange::LocalUseNat64),
            &[
                "64:ff9b:1::1",
                "64:ff9b:1::808:808",
                "64:ff9b:1::7f00:1",
                "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            ],
        );
    }

    #[test]
    fn ipv6_outside_global_unicast_is_reserved() {
        assert_all(
            Some(AddressRange::Reserved),
            &[
                "100:0:0:1::1",
                "1ff::1",
                "5f00::1",
                "1fff:ffff::1",
                "4000::1",
                "e000::1",
                "fbff::1",
                "fe00::1",
                "64:ff9b:2::1",
            ],
        );
        assert_eq!(
            classify(ip("192.88.99.1")),
            Some(AddressRange::Reserved),
            "deprecated 6to4 relay anycast"
        );
    }

    #[test]
    fn neighbours_of_the_ranges_are_public() {
        assert_all(
            None,
            &[
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
                "191.255.255.255",
                "192.0.1.255",
                "192.0.3.0",
                "192.88.98.255",
                "192.88.100.0",
                "198.17.255.255",
                "198.20.0.0",
                "198.51.99.255",
                "198.51.101.0",
                "203.0.112.255",
                "203.0.114.0",
                "2001:4860:4860::8888",
                "2606:4700::1111",
                "2000::1",
                "2001:200::1",
                "2001:db7:ffff::1",
                "2001:db9::1",
                "3ffe:ffff::1",
                "3fff:1000::1",
                "::ffff:8.8.8.8",
                "::ffff:0:808:808",
                "64:ff9b::808:808",
                "2002:808:808::1",
            ],
        );
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
            ("::ffff:198.18.0.1", Benchmarking),
            ("::ffff:192.0.2.1", Documentation),
            ("::ffff:192.0.0.8", ProtocolAssignments),
            // SIIT's IPv4-translated form (RFC 2765): ::ffff:0:a.b.c.d.
            ("::ffff:0:127.0.0.1", Loopback),
            ("::ffff:0:a9fe:a9fe", LinkLocal),
            ("::ffff:0:10.0.0.1", Private),
            ("::ffff:0:0.0.0.0", Unspecified),
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b::c612:1", Benchmarking),
            ("2002:c0a8:0101::1", Private),
            ("2002:7f00:0001::", Loopback),
            ("2002:cb00:7101::", Documentation),
        ];
        assert_each(&cases);
    }
}
