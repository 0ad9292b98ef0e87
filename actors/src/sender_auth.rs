//! Checks of mail from other servers (RFC 7208 SPF, RFC 6376 DKIM, RFC 7489 DMARC, RFC
//! 8617 ARC) with mail-auth, through the same resolver as delivery
//! (`delivery.dns.nameservers`, which tests replace), and what a failure costs.
//!
//! The submission pipeline asks [`Checker::check`] for every message no local account
//! submits. The result becomes our Authentication-Results header (RFC 8601), put on top
//! after any header that claims our authserv-id was removed (a client cannot forge our
//! verdict), a summary stored with the message (the API's message view), counts in
//! `mairust_mail_auth_total`, and an action: accept, the recipients' Junk mailbox, or
//! `550 5.7.1`, by `mail_auth.*`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, MessageAuthenticator, SpfOutput, SpfResult,
};
use serde::Serialize;

use crate::config::{Config, FailAction, MailAuthConfig};
use crate::metrics::metrics;
use crate::proto::Address;

/// The mailbox quarantined mail goes to (every user has one).
pub const JUNK: &str = "Junk";

/// What the checks found, as stored with the message and shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Summary {
    /// SPF of MAIL FROM (of `postmaster@<HELO>` for a bounce).
    pub spf: String,
    /// One per DKIM-Signature, in order.
    pub dkim: Vec<String>,
    pub dmarc: String,
    /// The From: domain's policy: `none`, `quarantine`, `reject`.
    pub dmarc_policy: String,
    pub arc: String,
    /// The From: domain DMARC was evaluated for.
    pub from_domain: String,
    /// `accept`, `junk`, `reject`.
    pub action: String,
}

/// What to do with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Accept,
    Junk,
    /// Refused: the reply's text.
    Reject(String),
    /// Try again later (the From: domain's DMARC record could not be read): the text.
    Defer(String),
}

/// The outcome of the checks of one message.
pub struct Checked {
    /// `Authentication-Results: ...\r\n`
    pub header: String,
    pub summary: Summary,
    pub action: Action,
}

pub struct Checker {
    authenticator: MessageAuthenticator,
    authserv_id: String,
    hostname: String,
    config: MailAuthConfig,
}

/// What the checks need of the SMTP transaction.
pub struct Envelope<'a> {
    pub remote: IpAddr,
    pub helo: Option<&'a str>,
    /// MAIL FROM; `None` for `<>`.
    pub mail_from: Option<&'a Address>,
}

impl Checker {
    /// The checker of `config`; `None` when `mail_auth.verify` is off.
    pub fn new(config: &Config) -> Result<Option<Arc<Checker>>, String> {
        if !config.mail_auth.verify {
            return Ok(None);
        }
        let nameservers = config
            .delivery
            .dns
            .nameserver_addrs()
            .map_err(|e| e.to_string())?;
        let resolver = crate::queue::route::tokio_resolver(&nameservers)?;
        let hostname = config.server.hostname.clone();
        Ok(Some(Arc::new(Checker {
            authenticator: MessageAuthenticator(resolver),
            authserv_id: config.mail_auth.authserv_id(&hostname).to_string(),
            hostname,
            config: config.mail_auth.clone(),
        })))
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// Checks `message` (our Received header first, then what the client sent). SPF,
    /// DKIM (with ARC) and DMARC each get a third of `mail_auth.timeout_seconds`: a
    /// slow SPF or DKIM lookup is `temperror` (never aligned for a domain the sender
    /// picked, so DMARC still fails where it should); a DMARC record that cannot be
    /// read in time defers the message.
    pub async fn check(&self, message: &[u8], envelope: Envelope<'_>) -> Checked {
        let checked = self.run(message, &envelope).await;
        count(&checked.summary);
        checked
    }

    async fn run(&self, message: &[u8], envelope: &Envelope<'_>) -> Checked {
        let step = Duration::from_secs_f64(self.config.timeout_seconds / 3.0);
        let helo = envelope.helo.unwrap_or("unknown");
        // RFC 7208 §2.4: a bounce is checked as postmaster@<HELO>.
        let sender = envelope
            .mail_from
            .map(|a| a.to_string())
            .unwrap_or_else(|| format!("postmaster@{helo}"));
        let mail_from_domain = sender.rsplit_once('@').map_or(helo, |(_, d)| d).to_string();
        let spf = tokio::time::timeout(
            step,
            self.authenticator.verify_spf(SpfParameters::verify_mail_from(
                envelope.remote,
                helo,
                &self.hostname,
                &sender,
            )),
        )
        .await
        .unwrap_or_else(|_| {
            tracing::info!(component = "smtp", event = "mail_auth_timeout", check = "spf", domain = %mail_from_domain, "SPF lookups took too long: temperror");
            SpfOutput::new(mail_from_domain.clone()).with_result(SpfResult::TempError)
        });
        let mail_from_text = envelope
            .mail_from
            .map(|a| a.to_string())
            .unwrap_or_default();
        // At most MAX_SIGNATURES DKIM signatures and a bounded ARC chain are looked at:
        // each costs a body hash and a DNS lookup of a name the sender picks.
        let bounded = bounded_signatures(message);
        let message = bounded.as_deref().unwrap_or(message);
        let Some(mut parsed) = AuthenticatedMessage::parse(message) else {
            // Not a message mail-auth can read (no header section): SPF only.
            let header = AuthenticationResults::new(&self.authserv_id)
                .with_spf_mailfrom_result(&spf, envelope.remote, &mail_from_text, helo)
                .to_header();
            let summary = Summary {
                spf: spf_name(spf.result()).into(),
                dmarc: "none".into(),
                dmarc_policy: "none".into(),
                arc: "none".into(),
                action: "accept".into(),
                ..Summary::default()
            };
            return Checked {
                header,
                summary,
                action: Action::Accept,
            };
        };
        // A signature listing more fields than any sender needs makes header hashing
        // quadratic: left out (reported as no signature).
        parsed
            .dkim_headers
            .retain(|h| h.header.h.len() <= MAX_SIGNED_FIELDS);
        parsed.errors.truncate(MAX_SIGNATURES);
        let checks = async {
            let dkim = self.authenticator.verify_dkim(&parsed).await;
            let arc = self.authenticator.verify_arc(&parsed).await;
            (dkim, arc)
        };
        let (dkim, arc) = match tokio::time::timeout(step, checks).await {
            Ok(done) => done,
            Err(_) => {
                tracing::info!(
                    component = "smtp",
                    event = "mail_auth_timeout",
                    check = "dkim",
                    "DKIM lookups took too long: temperror"
                );
                let dkim = parsed
                    .dkim_headers
                    .iter()
                    .map(|h| {
                        DkimOutput::temp_err(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(
                            "timeout".into(),
                        )))
                        .with_signature(&h.header)
                    })
                    .collect();
                (dkim, ArcOutput::default())
            }
        };
        // DMARC for every From: domain any reader of the message would see: ours
        // (mail-parser, which also indexes it) and mail-auth's; a message with several
        // gets the strictest outcome (RFC 7489 §6.6.1).
        let mut domains = crate::dkim::signer::from_domains(message);
        for from in parsed.from.clone() {
            if let Some((_, d)) = from.rsplit_once('@') {
                let d = d.to_ascii_lowercase();
                if !domains.contains(&d) {
                    domains.push(d);
                }
            }
        }
        let several = domains.len() > 1;
        let mut worst: Option<(u8, Decision)> = None;
        for domain in domains.iter().take(MAX_FROM_DOMAINS) {
            let alone;
            let author = if several {
                let mut one = parsed.clone();
                one.from = vec![format!("from@{domain}")];
                alone = one;
                &alone
            } else {
                &parsed
            };
            let params = DmarcParameters::new(author, &dkim, &mail_from_domain, &spf);
            let decision =
                match tokio::time::timeout(step, self.authenticator.verify_dmarc(params)).await {
                    Ok(dmarc) => self.decide(dmarc, &spf, &mail_from_domain, envelope.remote),
                    Err(_) => Decision::timed_out(domain),
                };
            let rank = decision.rank();
            if worst.as_ref().is_none_or(|(r, _)| rank > *r) {
                worst = Some((rank, decision));
            }
        }
        let decision = worst.map(|(_, d)| d).unwrap_or_else(Decision::no_from);
        let mut results = AuthenticationResults::new(&self.authserv_id)
            .with_dkim_results(&dkim, domains.first().map(String::as_str).unwrap_or(""))
            .with_spf_mailfrom_result(&spf, envelope.remote, &mail_from_text, helo)
            .with_arc_result(&arc, envelope.remote);
        if let Some(dmarc) = &decision.output {
            results = results.with_dmarc_result(dmarc);
        }
        let mut header = results.to_header();
        if decision.output.is_none() {
            // Our own verdict when mail-auth has none to write (no From:, a timeout).
            header.truncate(header.trim_end().len());
            header.push_str(&format!(";\r\n\tdmarc={}\r\n", decision.dmarc));
        }
        let summary = Summary {
            spf: spf_name(spf.result()).into(),
            dkim: dkim.iter().map(|d| dkim_name(d.result()).into()).collect(),
            dmarc: decision.dmarc.clone(),
            dmarc_policy: decision.policy.into(),
            arc: dkim_name(arc.result()).into(),
            from_domain: decision.domain.clone(),
            action: match &decision.action {
                Action::Accept => "accept",
                Action::Junk => "junk",
                Action::Reject(_) => "reject",
                Action::Defer(_) => "defer",
            }
            .into(),
        };
        Checked {
            header,
            summary,
            action: decision.action,
        }
    }

    /// What one From: domain's DMARC outcome asks for, by `mail_auth.*`.
    fn decide(
        &self,
        dmarc: DmarcOutput,
        spf: &SpfOutput,
        mail_from_domain: &str,
        remote: IpAddr,
    ) -> Decision {
        let result = dmarc.result();
        let failed = matches!(result, DmarcResult::Fail(_));
        let passed = matches!(result, DmarcResult::Pass);
        let policy = dmarc.policy();
        let domain = dmarc.domain().to_string();
        let (action, rule) = match policy {
            Policy::Reject if failed => (self.config.dmarc_reject, Rule::Dmarc),
            Policy::Quarantine if failed => (self.config.dmarc_quarantine, Rule::Dmarc),
            // No DMARC policy that decides (no record, or p=none): a hard SPF failure
            // of a message DMARC did not pass.
            Policy::None | Policy::Unspecified if spf.result() == SpfResult::Fail && !passed => {
                (self.config.spf_fail, Rule::Spf)
            }
            _ => (FailAction::Accept, Rule::Dmarc),
        };
        let action = match (action, rule) {
            (FailAction::Accept, _) => Action::Accept,
            (FailAction::Junk, _) => Action::Junk,
            (FailAction::Reject, Rule::Dmarc) => Action::Reject(format!(
                "message refused: the DMARC policy of {domain} rejects mail that fails authentication"
            )),
            (FailAction::Reject, Rule::Spf) => Action::Reject(format!(
                "message refused: the SPF record of {mail_from_domain} does not allow {remote} to send its mail"
            )),
        };
        Decision {
            dmarc: dmarc_name(&result).into(),
            policy: match policy {
                Policy::Reject => "reject",
                Policy::Quarantine => "quarantine",
                Policy::None | Policy::Unspecified => "none",
            },
            domain,
            action,
            output: Some(dmarc),
        }
    }
}

/// DKIM signatures looked at, at most; and ARC sets.
const MAX_SIGNATURES: usize = 5;
/// Header fields one DKIM signature may list (`h=`).
const MAX_SIGNED_FIELDS: usize = 64;
/// From: domains DMARC is evaluated for.
const MAX_FROM_DOMAINS: usize = 5;

#[derive(Clone, Copy)]
enum Rule {
    Dmarc,
    Spf,
}

/// The outcome of DMARC for one From: domain and what it asks for.
struct Decision {
    dmarc: String,
    policy: &'static str,
    domain: String,
    action: Action,
    output: Option<DmarcOutput>,
}

impl Decision {
    fn rank(&self) -> u8 {
        match self.action {
            Action::Accept => 0,
            Action::Junk => 1,
            Action::Defer(_) => 2,
            Action::Reject(_) => 3,
        }
    }

    /// The From: domain's DMARC record could not be read in time: its policy is
    /// unknown, so the message waits rather than risk a spoof.
    fn timed_out(domain: &str) -> Decision {
        tracing::info!(
            component = "smtp",
            event = "mail_auth_timeout",
            check = "dmarc",
            domain,
            "the DMARC record could not be read in time: message deferred"
        );
        Decision {
            dmarc: "temperror".into(),
            policy: "none",
            domain: domain.to_string(),
            action: Action::Defer(format!(
                "the DMARC record of {domain} could not be read now; try again later"
            )),
            output: None,
        }
    }

    fn no_from() -> Decision {
        Decision {
            dmarc: "none".into(),
            policy: "none",
            domain: String::new(),
            action: Action::Accept,
            output: None,
        }
    }
}

/// `message` without the DKIM-Signature fields after the first [`MAX_SIGNATURES`], and
/// without any ARC field when it has more than [`MAX_SIGNATURES`] ARC sets (the chain is
/// then `none`); `None` when nothing is left out.
fn bounded_signatures(message: &[u8]) -> Option<Vec<u8>> {
    let count = |wanted: &str| {
        let n = std::cell::Cell::new(0usize);
        has_field(message, |field| {
            if field_name(field).is_some_and(|name| name.eq_ignore_ascii_case(wanted)) {
                n.set(n.get() + 1);
            }
            false
        });
        n.get()
    };
    let too_many_dkim = count("dkim-signature") > MAX_SIGNATURES;
    let too_many_arc = count("arc-seal") > MAX_SIGNATURES;
    if !too_many_dkim && !too_many_arc {
        return None;
    }
    let seen = std::cell::Cell::new(0usize);
    without_fields(message, |field| {
        let Some(name) = field_name(field) else {
            return false;
        };
        if name.eq_ignore_ascii_case("dkim-signature") {
            seen.set(seen.get() + 1);
            return seen.get() > MAX_SIGNATURES;
        }
        too_many_arc && name.to_ascii_lowercase().starts_with("arc-")
    })
}

fn count(summary: &Summary) {
    let m = metrics();
    m.mail_auth("spf", &summary.spf);
    for d in &summary.dkim {
        m.mail_auth("dkim", d);
    }
    if summary.dkim.is_empty() {
        m.mail_auth("dkim", "none");
    }
    m.mail_auth("dmarc", &summary.dmarc);
    m.mail_auth("arc", &summary.arc);
}

fn spf_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_name(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_name(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

/// `message` without the Authentication-Results fields of its header section that
/// claim `authserv_id` (RFC 8601 §5: a forged verdict of ours), case-insensitively;
/// `None` when it has none.
pub fn without_forged_results(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    without_fields(message, |field| claims(field, authserv_id))
}

/// Whether `pick` picks a field of the header section of `message`.
pub fn has_field(message: &[u8], pick: impl Fn(&[u8]) -> bool) -> bool {
    let header_end = header_section_end(message);
    let mut at = 0;
    while at < header_end {
        let end = field_end(message, at, header_end);
        if pick(&message[at..end]) {
            return true;
        }
        at = end;
    }
    false
}

/// `message` without the fields of its header section (each whole, continuation lines
/// included) that `drop` picks; `None` when it picks none. The body is never looked at.
pub fn without_fields(message: &[u8], drop: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let header_end = header_section_end(message);
    let mut out: Option<Vec<u8>> = None;
    let mut kept_until = 0;
    let mut at = 0;
    while at < header_end {
        let end = field_end(message, at, header_end);
        if drop(&message[at..end]) {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(message.len()));
            buf.extend_from_slice(&message[kept_until..at]);
            kept_until = end;
        }
        at = end;
    }
    let mut buf = out?;
    buf.extend_from_slice(&message[kept_until..]);
    Some(buf)
}

/// Where the header section ends: after the CRLF of its last field (the empty line is
/// the body's side), or the whole message when it has no body.
fn header_section_end(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        if message[at..].starts_with(b"\r\n") || message[at..].starts_with(b"\n") {
            return at;
        }
        match memchr_newline(&message[at..]) {
            Some(n) => at += n + 1,
            None => return message.len(),
        }
    }
    message.len()
}

fn memchr_newline(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

/// The end of the field starting at `at`: after its last continuation line.
fn field_end(message: &[u8], mut at: usize, limit: usize) -> usize {
    loop {
        match memchr_newline(&message[at..limit]) {
            Some(n) => at += n + 1,
            None => return limit,
        }
        if at >= limit || !matches!(message[at], b' ' | b'\t') {
            return at;
        }
    }
}

/// The name of a header field (before its colon), trimmed; `None` without a colon.
pub fn field_name(field: &[u8]) -> Option<String> {
    let colon = field.iter().position(|&b| b == b':')?;
    Some(String::from_utf8_lossy(&field[..colon]).trim().to_string())
}

/// Whether `field` is an Authentication-Results field whose authserv-id is ours.
pub fn claims(field: &[u8], authserv_id: &str) -> bool {
    let Some(name) = field_name(field) else {
        return false;
    };
    if !name.eq_ignore_ascii_case("authentication-results") {
        return false;
    }
    let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
    let value = String::from_utf8_lossy(&field[colon + 1..]);
    let value = skip_cfws(&value);
    // A token, or a quoted-string (RFC 8601 §2.2: authserv-id is a `value`).
    let id: String = match value.strip_prefix('"') {
        Some(quoted) => {
            let mut id = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => id.extend(chars.next()),
                    '"' => break,
                    c => id.push(c),
                }
            }
            id
        }
        None => value
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != ';' && *c != '(')
            .collect(),
    };
    id.trim().eq_ignore_ascii_case(authserv_id)
}

/// `text` after leading folding white space and (nested) comments.
fn skip_cfws(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if !text.starts_with('(') {
            return text;
        }
        let mut depth = 0usize;
        let mut end = text.len();
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text = &text[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_results_of_our_id_are_removed_and_others_kept() {
        let message = b"Received: by us\r\nAuthentication-Results: mx.example.test; spf=pass\r\n smtp.mailfrom=x\r\nauthentication-results:  (comment (nested)) MX.EXAMPLE.TEST;\r\n\tdkim=pass\r\nAuthentication-Results: other.test; spf=fail\r\nSubject: s\r\n\r\nAuthentication-Results: mx.example.test; in the body\r\n";
        let out = without_forged_results(message, "mx.example.test").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: by us\r\nAuthentication-Results: other.test; spf=fail\r\nSubject: s\r\n\r\nAuthentication-Results: mx.example.test; in the body\r\n"
        );
        assert!(without_forged_results(b"Subject: s\r\n\r\nbody", "mx.example.test").is_none());
        // A longer name that starts like ours is someone else's.
        let other = b"Authentication-Results: mx.example.test.evil; spf=pass\r\n\r\n";
        assert!(without_forged_results(other, "mx.example.test").is_none());
        // A quoted id is the same id.
        let quoted =
            b"Authentication-Results: \"MX.example.test\"; dmarc=pass\r\nSubject: s\r\n\r\n";
        assert_eq!(
            without_forged_results(quoted, "mx.example.test").unwrap(),
            b"Subject: s\r\n\r\n"
        );
    }

    #[test]
    fn signatures_past_the_bound_are_left_out() {
        let mut message = String::new();
        for i in 0..8 {
            message.push_str(&format!("DKIM-Signature: v=1; s=s{i}\r\n"));
        }
        message.push_str("ARC-Seal: i=1\r\nSubject: s\r\n\r\nbody\r\n");
        let bounded = String::from_utf8(bounded_signatures(message.as_bytes()).unwrap()).unwrap();
        assert_eq!(bounded.matches("DKIM-Signature").count(), MAX_SIGNATURES);
        assert!(bounded.contains("s=s0") && !bounded.contains("s=s7"));
        assert!(bounded.contains("ARC-Seal: i=1"), "one ARC set is kept");
        assert!(bounded_signatures(b"DKIM-Signature: v=1\r\n\r\nbody").is_none());
    }
}
