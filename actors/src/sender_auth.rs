//! Checks of mail from other servers (RFC 7208 SPF of the MAIL FROM and HELO identities,
//! RFC 6376 DKIM, RFC 7489 DMARC, RFC 8617 ARC) with mail-auth, through the same resolver
//! as delivery (`delivery.dns.nameservers`, which tests replace), and what a failure
//! costs.
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

use bytes::Bytes;
use mail_auth::common::crypto::HashAlgorithm;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::Canonicalization;
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
    /// SPF of MAIL FROM (of `postmaster@<HELO>` for a bounce): what DMARC and
    /// `mail_auth.spf_fail` go by.
    pub spf: String,
    /// SPF of the HELO/EHLO name (RFC 7208 §2.3), recorded for the reader only: a HELO
    /// name proves less than the envelope sender, and DMARC never looks at it. `none`
    /// for an address literal or a name that is no host name (nothing to look up).
    pub spf_helo: String,
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

    /// Checks `message` (our Received header first, then what the client sent).
    ///
    /// Each step that waits on DNS gets a third of `mail_auth.timeout_seconds`: SPF
    /// (MAIL FROM and HELO side by side), then DKIM with ARC, then DMARC once per From:
    /// domain. A slow SPF or DKIM lookup is `temperror` (never aligned for a domain the
    /// sender picked, so DMARC still fails where it should; ARC is then `none`); a DMARC
    /// record that cannot be read in time defers the message.
    pub async fn check(&self, message: Bytes, envelope: Envelope<'_>) -> Checked {
        let checked = self.run(&message, &envelope).await;
        count(&checked.summary);
        checked
    }

    async fn run(&self, message: &Bytes, envelope: &Envelope<'_>) -> Checked {
        let step = Duration::from_secs_f64(self.config.timeout_seconds / 3.0);
        let helo = envelope.helo.unwrap_or("unknown");
        let helo_name = envelope.helo.and_then(helo_domain);
        // RFC 7208 §2.4: a bounce is checked as postmaster@<HELO>.
        let sender = envelope
            .mail_from
            .map(|a| a.to_string())
            .unwrap_or_else(|| format!("postmaster@{helo}"));
        let mail_from_domain = sender.rsplit_once('@').map_or(helo, |(_, d)| d).to_string();
        let mail_from_spf = async {
            if envelope.mail_from.is_none() && helo_name.is_none() {
                // A bounce from a client that named no host (an address literal): no
                // identity to look up.
                return SpfOutput::new(mail_from_domain.clone()).with_result(SpfResult::None);
            }
            let params =
                SpfParameters::verify_mail_from(envelope.remote, helo, &self.hostname, &sender);
            self.spf(step, params, "spf", &mail_from_domain).await
        };
        // RFC 7208 §2.3: the HELO identity too. `None`: a bounce, whose MAIL FROM check
        // was this very identity.
        let helo_spf = async {
            match helo_name {
                Some(name) if envelope.mail_from.is_some() => {
                    let params = SpfParameters::verify_ehlo(envelope.remote, name, &self.hostname);
                    Some(self.spf(step, params, "spf_helo", name).await)
                }
                Some(_) => None,
                None => Some(SpfOutput::new(helo.to_string()).with_result(SpfResult::None)),
            }
        };
        // The body hashes (CPU) are made while SPF waits on DNS.
        let (spf, spf_helo, prepared) = tokio::join!(mail_from_spf, helo_spf, prepare(message));
        let spf_helo = spf_helo.unwrap_or_else(|| spf.clone());
        let mail_from_text = envelope
            .mail_from
            .map(|a| a.to_string())
            .unwrap_or_default();
        let Some(mut parsed) = prepared.parsed(message) else {
            // Not a message mail-auth can read (no header section): SPF only, and no
            // DMARC verdict to follow.
            let results = spf_results(
                AuthenticationResults::new(&self.authserv_id),
                (&spf, &spf_helo),
                envelope,
                &mail_from_text,
            );
            let decision = self.without_dmarc(&spf, &mail_from_domain, envelope.remote);
            return outcome(
                results,
                (&spf, &spf_helo),
                &[],
                &ArcOutput::default(),
                decision,
            );
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
        // No From: domain (none, or only a group such as `undisclosed-recipients:;`):
        // nothing for DMARC to evaluate, but SPF still counts.
        let decision = worst
            .map(|(_, d)| d)
            .unwrap_or_else(|| self.without_dmarc(&spf, &mail_from_domain, envelope.remote));
        let results = AuthenticationResults::new(&self.authserv_id)
            .with_dkim_results(&dkim, domains.first().map(String::as_str).unwrap_or(""));
        let results = spf_results(results, (&spf, &spf_helo), envelope, &mail_from_text)
            .with_arc_result(&arc, envelope.remote);
        outcome(results, (&spf, &spf_helo), &dkim, &arc, decision)
    }

    /// One SPF identity (`check`: `spf` for MAIL FROM, `spf_helo`), within `step`;
    /// past it, `temperror`.
    async fn spf(
        &self,
        step: Duration,
        params: SpfParameters<'_>,
        check: &'static str,
        domain: &str,
    ) -> SpfOutput {
        match tokio::time::timeout(step, self.authenticator.verify_spf(params)).await {
            Ok(output) => output,
            Err(_) => {
                tracing::info!(component = "smtp", event = "mail_auth_timeout", check, domain = %domain, "SPF lookups took too long: temperror");
                SpfOutput::new(domain.to_string()).with_result(SpfResult::TempError)
            }
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
        Decision {
            dmarc: dmarc_name(&result).into(),
            policy: match policy {
                Policy::Reject => "reject",
                Policy::Quarantine => "quarantine",
                Policy::None | Policy::Unspecified => "none",
            },
            action: self.action(action, rule, &domain, mail_from_domain, remote),
            domain,
            output: Some(dmarc),
        }
    }

    /// No DMARC verdict to follow: the message names no From: domain, or mail-auth
    /// cannot read it. An SPF `fail` of MAIL FROM costs what `mail_auth.spf_fail` says,
    /// as when the From: domain publishes no policy: leaving the From: out is no way
    /// around it.
    fn without_dmarc(&self, spf: &SpfOutput, mail_from_domain: &str, remote: IpAddr) -> Decision {
        let action = if spf.result() == SpfResult::Fail {
            self.action(
                self.config.spf_fail,
                Rule::Spf,
                "",
                mail_from_domain,
                remote,
            )
        } else {
            Action::Accept
        };
        Decision {
            dmarc: "none".into(),
            policy: "none",
            domain: String::new(),
            action,
            output: None,
        }
    }

    /// The action `rule`'s failure costs, set to `action`; a refusal names the record
    /// that decided (`domain`'s DMARC record, or the SPF record of `mail_from_domain`).
    fn action(
        &self,
        action: FailAction,
        rule: Rule,
        domain: &str,
        mail_from_domain: &str,
        remote: IpAddr,
    ) -> Action {
        match (action, rule) {
            (FailAction::Accept, _) => Action::Accept,
            (FailAction::Junk, _) => Action::Junk,
            (FailAction::Reject, Rule::Dmarc) => Action::Reject(format!(
                "message refused: the DMARC policy of {domain} rejects mail that fails authentication"
            )),
            (FailAction::Reject, Rule::Spf) => Action::Reject(format!(
                "message refused: the SPF record of {mail_from_domain} does not allow {remote} to send its mail"
            )),
        }
    }
}

/// `results` with our SPF results: MAIL FROM's, then HELO's (RFC 8601 §2.7.2 names both
/// `smtp.mailfrom` and `smtp.helo`; one `spf=` each).
fn spf_results<'x>(
    results: AuthenticationResults<'x>,
    (spf, spf_helo): (&SpfOutput, &SpfOutput),
    envelope: &Envelope<'_>,
    mail_from: &str,
) -> AuthenticationResults<'x> {
    let helo = envelope.helo.unwrap_or("unknown");
    let results = results.with_spf_mailfrom_result(spf, envelope.remote, mail_from, helo);
    match envelope.helo {
        Some(helo) => results.with_spf_ehlo_result(spf_helo, envelope.remote, helo),
        None => results,
    }
}

/// The header, the summary and the action of one message: `results` holds every
/// method's result but DMARC's, which `decision` brings.
fn outcome(
    mut results: AuthenticationResults<'_>,
    (spf, spf_helo): (&SpfOutput, &SpfOutput),
    dkim: &[DkimOutput<'_>],
    arc: &ArcOutput<'_>,
    decision: Decision,
) -> Checked {
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
        spf_helo: spf_name(spf_helo.result()).into(),
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

/// The HELO name as an SPF identity (RFC 7208 §2.3): a host name, without a final dot.
/// `None` for an address literal (`[192.0.2.1]`, or a bare address as some clients send)
/// or anything else that is no host name: its result is `none`, with no lookup of a name
/// the client made up.
fn helo_domain(helo: &str) -> Option<&str> {
    let name = helo.strip_suffix('.').unwrap_or(helo);
    let host_name = name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    (host_name && name.parse::<IpAddr>().is_err()).then_some(name)
}

/// Bodies larger than this are parsed and hashed on a blocking thread (as the
/// pipeline's header rebuilding does).
const OFF_THREAD_BYTES: usize = 256 * 1024;

/// The body hashes mail-auth computes, one per canonicalization, algorithm and length
/// its signatures ask for (`AuthenticatedMessage::body_hashes`).
type BodyHashes = Vec<(Canonicalization, HashAlgorithm, u64, Vec<u8>)>;

/// The CPU-heavy part of reading a message for DKIM and ARC, made apart from the DNS
/// lookups: mail-auth hashes the body (once per canonicalization, algorithm and length
/// its DKIM-Signature and ARC-Message-Signature fields ask for) when it parses the
/// message, not when it verifies. A parsed message borrows the bytes, so it cannot come
/// back from a blocking thread; its body hashes and the body's offset can, and the
/// header section alone is then parsed again on this thread, cheaply.
struct Prepared {
    /// The message without the signatures past the bounds ([`bounded_signatures`]);
    /// `None`: the message as it came.
    bounded: Option<Vec<u8>>,
    /// Where mail-auth found the body, and its hashes; `None`: no header section
    /// mail-auth can read.
    read: Option<(u32, BodyHashes)>,
}

impl Prepared {
    fn of(message: &[u8]) -> Prepared {
        // At most MAX_SIGNATURES DKIM signatures and a bounded ARC chain are looked at:
        // each costs a body hash and a DNS lookup of a name the sender picks.
        let bounded = bounded_signatures(message);
        let text = bounded.as_deref().unwrap_or(message);
        let read = AuthenticatedMessage::parse(text).map(|p| (p.body_offset, p.body_hashes));
        Prepared { bounded, read }
    }

    /// `message` (the one [`Prepared::of`] was given) as mail-auth reads it: its header
    /// section parsed here, the body hashes those made already.
    fn parsed<'a>(&'a self, message: &'a [u8]) -> Option<AuthenticatedMessage<'a>> {
        let text = self.bounded.as_deref().unwrap_or(message);
        let (offset, hashes) = self.read.as_ref()?;
        // Up to the body, the header section parses as it did within the whole message
        // (mail-auth's own offset: the empty line is included), and the empty body it
        // then sees costs nothing to hash.
        let mut parsed = AuthenticatedMessage::parse(text.get(..*offset as usize)?)?;
        parsed.raw_message = text;
        parsed.body_offset = *offset;
        parsed.body_hashes = hashes.clone();
        Some(parsed)
    }
}

/// [`Prepared`] for `message`, on a blocking thread when it is large: hashing a body of
/// up to `max_message_size` (up to 5 DKIM signatures and an ARC set, each with its own
/// canonicalization) would hold an async worker and every session on it.
async fn prepare(message: &Bytes) -> Prepared {
    if message.len() <= OFF_THREAD_BYTES {
        return Prepared::of(message);
    }
    let owned = message.clone();
    match tokio::task::spawn_blocking(move || Prepared::of(&owned)).await {
        Ok(prepared) => prepared,
        // Its panic is the check's, as it would be on this thread.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled (the runtime is shutting down): done here instead.
        Err(_) => Prepared::of(message),
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

/// The outcome of DMARC for one From: domain (or of SPF alone, without one) and what it
/// asks for.
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
    m.mail_auth("spf_helo", &summary.spf_helo);
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
    fn a_prepared_message_reads_as_mail_auth_parses_it_whole() {
        let signatures = "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s=s1;\r\n h=from:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=dGVzdA==\r\nDKIM-Signature: v=1; a=rsa-sha256; c=simple/simple; d=a.test; s=s2; h=from;\r\n bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=dGVzdA==\r\n";
        let large = format!("{}\r\n", "y".repeat(998)).repeat(400);
        for message in [
            format!("Received: by us\r\n{signatures}From: <x@a.test>\r\nSubject: s\r\n\r\nbody  line \r\n\r\n\r\n"),
            format!("Received: by us\r\n{signatures}From: <x@a.test>\r\n\r\n{large}"),
            // No body.
            format!("{signatures}From: <x@a.test>\r\nSubject: s\r\n"),
            // Bare line feeds.
            "DKIM-Signature: v=1; a=rsa-sha256; d=a.test; s=s; h=from; bh=AAAA; b=AAAA\nFrom: x@a.test\n\nbody\n".to_string(),
        ] {
            let message = message.as_bytes();
            let whole = AuthenticatedMessage::parse(message).unwrap();
            assert!(!whole.body_hashes.is_empty(), "the signatures parse");
            let prepared = Prepared::of(message);
            assert_eq!(prepared.parsed(message).unwrap(), whole);
        }
        let prepared = Prepared::of(b"");
        assert!(prepared.parsed(b"").is_none());
    }

    #[test]
    fn only_host_names_are_helo_identities() {
        assert_eq!(helo_domain("mta.sender.test"), Some("mta.sender.test"));
        assert_eq!(helo_domain("mta.sender.test."), Some("mta.sender.test"));
        for no_host in [
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "192.0.2.1",
            "2001:db8::1",
            "localhost",
            "a..test",
            "bad;name.test",
            "",
        ] {
            assert_eq!(helo_domain(no_host), None, "{no_host}");
        }
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
