//! What a domain publishes in DNS for mail to reach it and for its mail to be trusted:
//! MX, SPF, each DKIM key's record, DMARC. `mairust domain dns` and
//! `GET /api/v1/domains/{name}/dns` print the same list.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::store::{KeyInfo, KeyState};

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PublishRecord {
    /// `mx`, `spf`, `dkim` or `dmarc`.
    pub purpose: &'static str,
    /// The owner name, without the final dot.
    pub name: String,
    /// `MX` or `TXT`.
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// The record's data as one text (a TXT record's strings joined).
    pub value: String,
    /// What to know about it.
    pub note: String,
}

impl PublishRecord {
    /// The record as a zone file line; a TXT text longer than 255 bytes is split into
    /// several strings (RFC 1035 §3.3), which receivers join.
    pub fn zone_line(&self) -> String {
        let data = if self.rtype == "TXT" {
            self.value
                .as_bytes()
                .chunks(255)
                .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            self.value.clone()
        };
        format!("{}. 3600 IN {} {data}", self.name, self.rtype)
    }
}

/// The records of `domain`, received by `hostname`, with `keys` (the domain's DKIM
/// keys: those past their publication end are left out).
pub fn domain_records(
    domain: &str,
    hostname: &str,
    keys: &[KeyInfo],
    now: DateTime<Utc>,
) -> Vec<PublishRecord> {
    let mut records = vec![
        PublishRecord {
            purpose: "mx",
            name: domain.to_string(),
            rtype: "MX",
            value: format!("10 {hostname}."),
            note: format!("mail for {domain} goes to this server ({hostname}, server.hostname), which needs an A/AAAA record and a PTR record naming it"),
        },
        PublishRecord {
            purpose: "spf",
            name: domain.to_string(),
            rtype: "TXT",
            value: "v=spf1 mx -all".into(),
            note: "only the hosts of the MX record send mail from this domain; add the relay's addresses (ip4:/include:) when delivery.smarthost relays it".into(),
        },
    ];
    for key in keys {
        let state = key.state(now);
        let note = match state {
            KeyState::Pending => format!(
                "publish now: this key signs from {}",
                key.key.signs_from.to_utc().to_rfc3339()
            ),
            KeyState::Active => "signs mail now".to_string(),
            KeyState::Retired => format!(
                "retired: keep it published until {} (mail signed with it may still be on its way)",
                key.key
                    .publish_until
                    .map(|t| t.to_utc().to_rfc3339())
                    .unwrap_or_default()
            ),
            KeyState::Expired => continue,
        };
        let record = key.record();
        records.push(PublishRecord {
            purpose: "dkim",
            name: record.name,
            rtype: "TXT",
            value: record.value,
            note: format!(
                "DKIM key {} ({}): {note}",
                key.key.selector, key.key.algorithm
            ),
        });
    }
    records.push(PublishRecord {
        purpose: "dmarc",
        name: format!("_dmarc.{domain}"),
        rtype: "TXT",
        value: "v=DMARC1; p=quarantine; adkim=r; aspf=r".into(),
        note: "receivers junk mail from this domain that neither SPF nor DKIM authenticates; start with p=none to watch first, add rua=mailto:... for aggregate reports, move to p=reject once all mail is signed".into(),
    });
    records
}

/// The TXT record that publishes `key`.
pub fn dkim_record(key: &KeyInfo, note: String) -> PublishRecord {
    let record = key.record();
    PublishRecord {
        purpose: "dkim",
        name: record.name,
        rtype: "TXT",
        value: record.value,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_txt_records_are_split_into_strings() {
        let record = PublishRecord {
            purpose: "dkim",
            name: "s._domainkey.example.test".into(),
            rtype: "TXT",
            value: format!("v=DKIM1; k=rsa; p={}", "A".repeat(392)),
            note: String::new(),
        };
        let line = record.zone_line();
        assert!(line.starts_with("s._domainkey.example.test. 3600 IN TXT \"v=DKIM1;"));
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), record.value);
    }
}
