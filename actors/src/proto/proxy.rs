//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that a
//! TCP load balancer sends before the client's bytes, naming the client it forwards.
//!
//! Pure parsing over a prefix of the stream: [`parse`] says how many more bytes it
//! needs, or what the complete header holds and how long it is, so the caller reads
//! exactly the header and not one byte of SMTP. Only a peer in the listener's trusted
//! networks may send one (`smtp.listeners.NAME.proxy_protocol.trusted`); from anyone
//! else [`looks_like_header`] lets the session refuse it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is at most 107 bytes, CRLF included.
pub const V1_MAX: usize = 107;
/// Version 2 headers longer than this (addresses plus TLVs) are refused: HAProxy sends
/// a few dozen bytes unless told to add TLVs, and the peer is trusted but its bytes
/// still cost memory.
pub const V2_MAX: usize = 16 + 4096;
/// Bytes needed before the version is known (v1's shortest, "PROXY UNKNOWN\r\n", is 15).
pub const PREFIX: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// At least this many bytes in all are needed (more may be asked for later).
    NeedMore(usize),
    /// A whole header of `len` bytes.
    Header { len: usize, header: Header },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client and the address it connected to; None for `UNKNOWN` (v1) and the
    /// LOCAL command or an unspecified family (v2): the connection is the proxy's own
    /// (a health check) and keeps the proxy's address.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Whether `buf` (the first bytes a client sent) starts like a PROXY header of either
/// version: for refusing one from a peer that is not a trusted proxy.
pub fn looks_like_header(buf: &[u8]) -> bool {
    let n = buf.len().min(V2_SIGNATURE.len());
    (n >= 5 && buf[..n] == V2_SIGNATURE[..n])
        || buf.len() >= 6 && buf[..6].eq_ignore_ascii_case(b"PROXY ")
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < PREFIX {
        return Ok(Parsed::NeedMore(PREFIX));
    }
    if buf.starts_with(b"PROXY ") {
        return parse_v1(buf);
    }
    if buf[..PREFIX] == V2_SIGNATURE[..PREFIX] {
        return parse_v2(buf);
    }
    Err(ProxyError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::V1("no CRLF within 107 bytes"));
        }
        // One byte at a time: never past the CRLF, whose place is unknown.
        return Ok(Parsed::NeedMore(buf.len() + 1));
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::V1("not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match fields.get(1).copied() {
        Some("UNKNOWN") => Ok(Parsed::Header {
            len,
            header: Header { addresses: None },
        }),
        Some(family @ ("TCP4" | "TCP6")) => {
            let [_, _, src, dst, sport, dport] = fields[..] else {
                return Err(ProxyError::V1("expected 6 fields"));
            };
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = match family {
                    "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
                    _ => s.parse::<Ipv6Addr>().map(IpAddr::V6),
                }
                .map_err(|_| ProxyError::V1("bad address"))?;
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                // Decimal, no sign, no leading zero (the specification's form).
                if s.is_empty()
                    || !s.bytes().all(|b| b.is_ascii_digit())
                    || (s.len() > 1 && s.starts_with('0'))
                {
                    return Err(ProxyError::V1("bad port"));
                }
                s.parse().map_err(|_| ProxyError::V1("bad port"))
            };
            Ok(Parsed::Header {
                len,
                header: Header {
                    addresses: Some((
                        SocketAddr::new(ip(src)?, port(sport)?),
                        SocketAddr::new(ip(dst)?, port(dport)?),
                    )),
                },
            })
        }
        _ => Err(ProxyError::V1("unknown protocol family")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 16 {
        return Ok(Parsed::NeedMore(16));
    }
    if buf[..12] != V2_SIGNATURE {
        return Err(ProxyError::NotProxy);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Err(ProxyError::V2("longer than 4 KiB"));
    }
    if buf.len() < len {
        return Ok(Parsed::NeedMore(len));
    }
    let body = &buf[16..len];
    let addresses = match command {
        // LOCAL: the proxy's own connection (health checks); the address block is
        // ignored.
        0x0 => None,
        0x1 => match buf[13] {
            // TCP over IPv4, TCP over IPv6.
            0x11 => {
                let a = body
                    .get(..12)
                    .ok_or(ProxyError::V2("IPv4 block too short"))?;
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                Some((
                    SocketAddr::new(ip(0), port(8)),
                    SocketAddr::new(ip(4), port(10)),
                ))
            }
            0x21 => {
                let a = body
                    .get(..36)
                    .ok_or(ProxyError::V2("IPv6 block too short"))?;
                let ip = |o: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                Some((
                    SocketAddr::new(ip(0), port(32)),
                    SocketAddr::new(ip(16), port(34)),
                ))
            }
            // UNSPEC: unknown origin, keep the proxy's address.
            0x00 => None,
            _ => return Err(ProxyError::V2("not TCP over IPv4 or IPv6")),
        },
        _ => return Err(ProxyError::V2("unknown command")),
    };
    Ok(Parsed::Header {
        len,
        header: Header { addresses },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(buf: &[u8]) -> (usize, Option<(SocketAddr, SocketAddr)>) {
        match parse(buf).unwrap() {
            Parsed::Header { len, header } => (len, header.addresses),
            other => panic!("{other:?}"),
        }
    }

    /// Feeds `buf` the way the reader does: as many bytes as asked for, never more.
    fn incremental(buf: &[u8]) -> Result<(usize, Option<(SocketAddr, SocketAddr)>), ProxyError> {
        let mut have = 0;
        loop {
            match parse(&buf[..have])? {
                Parsed::NeedMore(n) => {
                    assert!(n > have, "asks for nothing new at {have}");
                    assert!(n <= buf.len(), "asks past the header: {n} > {}", buf.len());
                    have = n;
                }
                Parsed::Header { len, header } => return Ok((len, header.addresses)),
            }
        }
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n";
        let (len, addrs) = header(line);
        assert_eq!(&line[len..], b"EHLO x\r\n");
        assert_eq!(
            addrs,
            Some((
                "192.0.2.7:40000".parse().unwrap(),
                "198.51.100.1:25".parse().unwrap()
            ))
        );
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n";
        assert_eq!(incremental(line).unwrap(), (line.len(), header(line).1));
        assert_eq!(
            header(line).1.unwrap().0,
            "[2001:db8::7]:40000".parse::<SocketAddr>().unwrap()
        );
        let line = b"PROXY UNKNOWN\r\n";
        assert_eq!(incremental(line).unwrap(), (15, None));
        assert_eq!(header(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").1, None);
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n"[..],
            b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 070 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 25\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 25\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::V1(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(
            parse(&long),
            Err(ProxyError::V1("no CRLF within 107 bytes"))
        );
        assert_eq!(parse(b"EHLO client.example\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROXY"), Ok(Parsed::NeedMore(PREFIX)));
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v2_ipv4_ipv6_local_with_tlvs() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&25u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x02, b'i', b'd']); // a TLV, skipped
        let h = v2(1, 0x11, &body);
        let mut stream = h.clone();
        stream.extend_from_slice(b"EHLO x\r\n");
        assert_eq!(
            incremental(&h).unwrap(),
            (
                h.len(),
                Some((
                    "192.0.2.7:40000".parse().unwrap(),
                    "198.51.100.1:25".parse().unwrap()
                ))
            )
        );
        assert_eq!(header(&stream).0, h.len());

        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0x9c, 0x40, 0, 25]);
        let h = v2(1, 0x21, &body);
        assert_eq!(
            header(&h).1.unwrap().0,
            "[2001:db8::7]:40000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(header(&v2(0, 0x00, &[])).1, None);
        assert_eq!(header(&v2(1, 0x00, &[])).1, None);
    }

    #[test]
    fn v2_malformed() {
        assert_eq!(
            parse(&v2(1, 0x11, &[1, 2, 3])),
            Err(ProxyError::V2("IPv4 block too short"))
        );
        assert_eq!(
            parse(&v2(1, 0x21, &[0; 12])),
            Err(ProxyError::V2("IPv6 block too short"))
        );
        assert_eq!(
            parse(&v2(1, 0x12, &[0; 12])),
            Err(ProxyError::V2("not TCP over IPv4 or IPv6"))
        );
        assert_eq!(
            parse(&v2(2, 0x11, &[0; 12])),
            Err(ProxyError::V2("unknown command"))
        );
        let mut h = v2(1, 0x11, &[0; 12]);
        h[12] = 0x11;
        assert_eq!(parse(&h), Err(ProxyError::V2("version is not 2")));
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&h), Err(ProxyError::V2("longer than 4 KiB")));
        let mut h = V2_SIGNATURE.to_vec();
        h[9] = b'X';
        h.extend_from_slice(&[0x21, 0x11, 0, 0]);
        assert_eq!(parse(&h), Err(ProxyError::NotProxy));
    }

    #[test]
    fn untrusted_headers_are_recognised() {
        assert!(looks_like_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));
        assert!(looks_like_header(b"proxy tcp4"));
        assert!(looks_like_header(&V2_SIGNATURE));
        assert!(looks_like_header(&V2_SIGNATURE[..5]));
        assert!(!looks_like_header(b"\r\n"));
        assert!(!looks_like_header(b"\r\n\r\n"));
        assert!(!looks_like_header(b"EHLO proxy.example\r\n"));
        assert!(!looks_like_header(b"PROXY"));
    }
}
