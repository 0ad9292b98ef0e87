//! The client address of an API request (`api.trusted_proxies`, `api.forwarded_header`):
//! the peer's address, unless the peer is a trusted reverse proxy, whose forwarding
//! header then names the client. The failed-authentication limiter and the audit log
//! use it, so one client behind a proxy neither locks out the others nor hides behind
//! the proxy's address.
//!
//! Each proxy appends the address it received the request from, so the list reads
//! `client, proxy1, proxy2` and only its right end is trustworthy: the client can write
//! anything at the left. The client is therefore the right-most address that is not a
//! trusted proxy itself, never the left-most.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;
use mairust_actors::config::{ApiConfig, ConfigError, ForwardedHeader};

/// Finds the client address behind trusted proxies.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    proxies: Vec<IpNet>,
    header: ForwardedHeader,
}

impl ClientAddress {
    pub fn from_config(api: &ApiConfig) -> Result<Self, ConfigError> {
        Ok(ClientAddress {
            proxies: api.trusted_proxy_networks()?,
            header: api.forwarded_header,
        })
    }

    /// Whether `ip` is one of `api.trusted_proxies`.
    pub fn trusted(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer`: `peer` itself unless it is a trusted proxy;
    /// else the right-most address of the forwarding header that is not a trusted
    /// proxy. When the header is missing, holds only trusted proxies or has a value that
    /// is not an address where the client should be, the farthest trusted hop reached
    /// is the answer (a proxy's own request, or a proxy that hides its clients).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted(peer) {
            return peer;
        }
        let hops = match self.header {
            ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
            ForwardedHeader::Forwarded => forwarded(headers),
        };
        let mut nearest = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) if self.trusted(ip) => nearest = ip,
                Some(ip) => return ip,
                None => break,
            }
        }
        nearest
    }
}

/// The values of every `name` header line, in order, split at commas outside quotes.
fn elements(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
    let mut items = Vec::new();
    for value in headers.get_all(name) {
        // A value that is not visible ASCII is no address list: one unusable hop.
        let Ok(value) = value.to_str() else {
            items.push(String::new());
            continue;
        };
        let mut current = String::new();
        let mut quoted = false;
        let mut escaped = false;
        for c in value.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    items.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        items.push(current);
    }
    items
}

/// An address as proxies write it: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<IpAddr>().ok())
        })
        .map(|ip| ip.to_canonical())
}

/// `X-Forwarded-For: client, proxy1, proxy2`, left to right; `None` where an entry is
/// not an address.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    elements(headers, HeaderName::from_static("x-forwarded-for"))
        .iter()
        .map(|e| address(e))
        .collect()
}

/// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"`: the `for`
/// of each element, left to right; `None` where there is none or it is no address
/// (`unknown`, an obfuscated `_name`).
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    elements(headers, HeaderName::from_static("forwarded"))
        .iter()
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"'))
                    .and_then(address)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn policy(proxies: &[&str], header: ForwardedHeader) -> ClientAddress {
        let api = ApiConfig {
            trusted_proxies: proxies.iter().map(|s| s.to_string()).collect(),
            forwarded_header: header,
            ..ApiConfig::default()
        };
        ClientAddress::from_config(&api).unwrap()
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let p = policy(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["198.51.100.1"]);
        assert_eq!(p.client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        let none = policy(&[], ForwardedHeader::XForwardedFor);
        assert_eq!(none.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let p = policy(&["10.0.0.0/8", "192.0.2.9"], ForwardedHeader::XForwardedFor);
        // The client forged the first entry; the proxies appended the rest.
        let h = headers(
            "x-forwarded-for",
            &["203.0.113.66, 198.51.100.7", "192.0.2.9, 10.1.2.3"],
        );
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("198.51.100.7"));
        let h = headers("x-forwarded-for", &["[2001:db8::7]:4711"]);
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("2001:db8::7"));
        let h = headers("x-forwarded-for", &["198.51.100.7:4711"]);
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("198.51.100.7"));
        // An IPv4 peer seen on a dual-stack socket.
        let h = headers("x-forwarded-for", &["198.51.100.7"]);
        assert_eq!(p.client(ip("::ffff:10.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn without_a_usable_client_the_farthest_trusted_hop_answers() {
        let p = policy(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        assert_eq!(p.client(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        let h = headers("x-forwarded-for", &["10.9.9.9, 10.0.0.2"]);
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("10.9.9.9"));
        let h = headers("x-forwarded-for", &["198.51.100.7, garbage, 10.0.0.2"]);
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_is_read_only_when_chosen() {
        let xff = policy(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let rfc = policy(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let mut h = headers(
            "forwarded",
            &[
                "for=203.0.113.66;proto=http, For=\"[2001:db8:cafe::17]:4711\"",
                "for=10.2.3.4;by=10.0.0.1",
            ],
        );
        assert_eq!(rfc.client(ip("10.0.0.1"), &h), ip("2001:db8:cafe::17"));
        // A forged X-Forwarded-For beside it changes nothing, and the other way round.
        h.append(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("203.0.113.99"),
        );
        assert_eq!(rfc.client(ip("10.0.0.1"), &h), ip("2001:db8:cafe::17"));
        assert_eq!(xff.client(ip("10.0.0.1"), &h), ip("203.0.113.99"));
        // A comma inside a quoted value does not start a new element.
        let h = headers(
            "forwarded",
            &["for=\"198.51.100.1, for=203.0.113.5\", for=192.0.2.44"],
        );
        assert_eq!(rfc.client(ip("10.0.0.1"), &h), ip("192.0.2.44"));
        let h = headers("forwarded", &["for=unknown, for=_hidden"]);
        assert_eq!(rfc.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }
}
