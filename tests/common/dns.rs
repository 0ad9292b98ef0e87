//! A tiny authoritative DNS server over UDP for tests: answers MX, A and TXT queries
//! from tables, NXDOMAIN for names it does not know, so the server's real resolver
//! (hickory, configured with `delivery.dns.nameservers`) can be exercised offline:
//! MX lookups of delivery, and SPF, DKIM and DMARC records of the sender checks.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const TYPE_A: u16 = 1;
const TYPE_MX: u16 = 15;
const TYPE_TXT: u16 = 16;

#[derive(Default, Clone)]
pub struct Zone {
    /// name → [(preference, exchange)]; an exchange of "" is a null MX.
    pub mx: HashMap<String, Vec<(u16, String)>>,
    pub a: HashMap<String, Vec<Ipv4Addr>>,
    /// name → TXT records, each one text (split into 255-byte strings on the wire).
    pub txt: HashMap<String, Vec<String>>,
    /// Names (and the names below them) the server never answers: a slow DNS.
    pub silent: Vec<String>,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    pub fn start(zone: Zone) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Acquire) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&zone, &buf[..n]) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        DnsServer { addr, stop }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Reads the question's name; returns it (lower case, no final dot) and the offset
/// after it.
fn read_name(packet: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    Some((labels.join("."), at))
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let (name, end) = read_name(query, 12)?;
    if zone
        .silent
        .iter()
        .any(|s| name == *s || name.ends_with(&format!(".{s}")))
    {
        return None;
    }
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    let question = query.get(12..end + 4)?;
    let known =
        zone.mx.contains_key(&name) || zone.a.contains_key(&name) || zone.txt.contains_key(&name);
    let mut records: Vec<(u16, Vec<u8>)> = Vec::new();
    match qtype {
        TYPE_MX => {
            for (preference, exchange) in zone.mx.get(&name).into_iter().flatten() {
                let mut rdata = preference.to_be_bytes().to_vec();
                write_name(&mut rdata, exchange);
                records.push((TYPE_MX, rdata));
            }
        }
        TYPE_A => {
            for ip in zone.a.get(&name).into_iter().flatten() {
                records.push((TYPE_A, ip.octets().to_vec()));
            }
        }
        TYPE_TXT => {
            for text in zone.txt.get(&name).into_iter().flatten() {
                let mut rdata = Vec::new();
                for chunk in text.as_bytes().chunks(255) {
                    rdata.push(chunk.len() as u8);
                    rdata.extend_from_slice(chunk);
                }
                records.push((TYPE_TXT, rdata));
            }
        }
        _ => {}
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]); // id
    // Response, authoritative, recursion desired/available; NXDOMAIN when unknown.
    out.extend_from_slice(&[0x85, if known { 0x80 } else { 0x83 }]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (rtype, rdata) in records {
        out.extend_from_slice(&[0xC0, 0x0C]); // the question's name
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}
