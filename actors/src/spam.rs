//! Spam scanning with rspamd over its HTTP protocol (`POST /checkv2`, the message as the
//! body, the envelope as headers), and what its answer does to the message.
//!
//! rspamd's action decides: `reject` → `550 5.7.1`; `soft reject` and `greylist` →
//! `451 4.7.1`; `add header` and `rewrite subject` → `X-Spam-*` headers and the
//! recipients' Junk mailbox (the subject is left as it was); `no action` → the
//! `X-Spam-*` headers only. `X-Spam-*` headers the message arrived with are removed,
//! so only rspamd's verdict is shown. A scan that fails (rspamd down, an error, slower
//! than `timeout_seconds`) follows `on_error`; after `breaker_failures` such failures
//! in a row the breaker (the hooks' own, [`crate::hooks::breaker`]) opens and no call
//! is made until the cool-down is over, so a dead rspamd costs a message nothing.
//!
//! rspamd's words reach our headers, the reply line and the stored report only through
//! `printable` and `symbol_name`: rspamd is trusted, but a CR or LF in its JSON (a
//! custom action, a rule named by an operator's Lua) must not become a header line of
//! its own or a second reply line.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{RspamdConfig, SpamOnError};
use crate::hooks::breaker::{Breaker, Thresholds, Transition};
use crate::metrics::metrics;

/// Longest rspamd answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Symbols named in `X-Spam-Status` (the highest scores first).
const STATUS_SYMBOLS: usize = 20;
/// Longest action name kept (rspamd's own are at most 15 bytes: `rewrite subject`).
const MAX_ACTION: usize = 64;
/// Longest symbol name kept (rspamd's own are under 40 bytes).
const MAX_SYMBOL: usize = 64;
/// Scores shown in headers are clamped to this, so a score of 1e300 is not a line of
/// 300 digits.
const MAX_SHOWN_SCORE: f64 = 1e6;
/// Header lines are folded before they pass this length (RFC 5322 §2.1.1's 78).
const FOLD_AT: usize = 78;

/// What a scan found, as stored with the message and shown by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub score: f64,
    pub required_score: f64,
    /// rspamd's action: `no action`, `add header`, `rewrite subject`, `greylist`,
    /// `soft reject`, `reject` (printable ASCII, at most 64 bytes).
    pub action: String,
    /// Symbols with their scores, highest first (names of letters, digits, `_`, `.`
    /// and `-`, at most 64 bytes).
    pub symbols: Vec<(String, f64)>,
}

/// What to do with the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Taken; the headers to put on top (empty when not scanned).
    Accept {
        headers: String,
        report: Option<Report>,
    },
    /// Taken into the Junk mailbox, with the headers.
    Junk { headers: String, report: Report },
    /// `451 4.7.1` with this text.
    Defer(String),
    /// `550 5.7.1` with this text.
    Reject(String),
}

/// What rspamd is told about the message.
pub struct ScanEnvelope<'a> {
    pub remote: IpAddr,
    pub helo: Option<&'a str>,
    /// MAIL FROM; empty for `<>`.
    pub mail_from: &'a str,
    pub recipients: Vec<String>,
    /// The authenticated account, for mail our users submit.
    pub user: Option<&'a str>,
    pub queue_id: &'a str,
}

#[derive(Deserialize)]
struct Answer {
    action: String,
    #[serde(default)]
    score: f64,
    #[serde(default)]
    required_score: f64,
    #[serde(default)]
    symbols: std::collections::HashMap<String, Symbol>,
    #[serde(default)]
    messages: Messages,
}

#[derive(Deserialize)]
struct Symbol {
    #[serde(default)]
    score: f64,
}

#[derive(Deserialize, Default)]
struct Messages {
    smtp_message: Option<String>,
}

pub struct Rspamd {
    client: reqwest::Client,
    url: String,
    config: RspamdConfig,
    breaker: Mutex<Breaker>,
}

impl Rspamd {
    /// The scanner of `spam.rspamd`; `None` when no URL is set.
    pub fn new(config: &RspamdConfig) -> Result<Option<Arc<Rspamd>>, String> {
        if config.url.is_empty() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(config.timeout_seconds))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("spam.rspamd: HTTP client: {e}"))?;
        Ok(Some(Arc::new(Rspamd {
            client,
            url: format!("{}/checkv2", config.url.trim_end_matches('/')),
            config: config.clone(),
            breaker: Mutex::new(Breaker::default()),
        })))
    }

    /// Whether mail our users submit is scanned too.
    pub fn scans_outbound(&self) -> bool {
        self.config.scan_outbound
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            failures: self.config.breaker_failures.max(1),
            cooldown: Duration::from_secs_f64(self.config.breaker_cooldown_seconds),
        }
    }

    /// Scans `message` and says what to do with it.
    pub async fn scan(&self, message: bytes::Bytes, envelope: ScanEnvelope<'_>) -> Verdict {
        let (admitted, transition) = self
            .breaker
            .lock()
            .expect("rspamd breaker")
            .admit(Instant::now(), self.thresholds());
        let trial = matches!(transition, Some(Transition::HalfOpened));
        log_transition(transition);
        if !admitted {
            metrics().spam_scan("skipped");
            return self.failed();
        }
        // The breaker learns how the call ended. A call dropped mid-way (the client
        // went away) says nothing about rspamd, unless it was the trial, which must
        // not stay in flight for ever: that counts as a failure.
        let mut outcome = Outcome {
            rspamd: self,
            ok: if trial { Some(false) } else { None },
        };
        let answer = self.call(message, &envelope).await;
        // Only no answer (connection, timeout, 5xx) means rspamd is unavailable; an
        // answer it gave that we cannot use is this message's problem.
        outcome.ok = Some(!matches!(answer, Err(Failure::Unavailable(_))));
        drop(outcome);
        match answer {
            Ok(answer) => verdict(answer),
            Err(Failure::Unavailable(e) | Failure::Unusable(e)) => {
                metrics().spam_scan("error");
                tracing::warn!(component = "spam", event = "rspamd_failed", error = %e, "rspamd scan failed");
                self.failed()
            }
        }
    }

    async fn call(
        &self,
        message: bytes::Bytes,
        envelope: &ScanEnvelope<'_>,
    ) -> Result<Answer, Failure> {
        let mut request = self
            .client
            .post(&self.url)
            .header("IP", envelope.remote.to_string())
            .header("From", envelope.mail_from)
            .header("Queue-Id", envelope.queue_id);
        if let Some(helo) = envelope.helo.filter(|h| header_safe(h)) {
            request = request.header("Helo", helo);
        }
        if let Some(user) = envelope.user.filter(|u| header_safe(u)) {
            request = request.header("User", user);
        }
        for rcpt in envelope.recipients.iter().filter(|r| header_safe(r)) {
            request = request.header("Rcpt", rcpt.as_str());
        }
        let mut response = request.body(message).send().await.map_err(|e| {
            if e.is_builder() {
                Failure::Unusable(format!("request to rspamd: {e}"))
            } else {
                Failure::Unavailable(format!("rspamd at {}: {e}", self.url))
            }
        })?;
        let status = response.status();
        if status.is_server_error() {
            return Err(Failure::Unavailable(format!(
                "rspamd answered HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(Failure::Unusable(format!("rspamd answered HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Failure::Unavailable(format!("reading rspamd's answer: {e}")))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Failure::Unusable("rspamd's answer is too long".into()));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| Failure::Unusable(format!("rspamd's answer is not understood: {e}")))
    }

    fn failed(&self) -> Verdict {
        match self.config.on_error {
            SpamOnError::Accept => Verdict::Accept {
                headers: String::new(),
                report: None,
            },
            SpamOnError::Tempfail => {
                Verdict::Defer("spam scanning is unavailable, try again later".into())
            }
        }
    }
}

/// What rspamd's answer does to the message. The action is matched as rspamd wrote it;
/// what is kept and shown of it (action, symbol names, its SMTP message) is made safe
/// first.
fn verdict(answer: Answer) -> Verdict {
    let mut symbols: Vec<(String, f64)> = answer
        .symbols
        .into_iter()
        .filter_map(|(name, s)| Some((symbol_name(&name)?, s.score)))
        .collect();
    symbols.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let report = Report {
        score: answer.score,
        required_score: answer.required_score,
        action: printable(&answer.action, MAX_ACTION),
        symbols,
    };
    let said = |default: &str| {
        answer
            .messages
            .smtp_message
            .as_deref()
            .map(|m| printable(m.trim(), crate::proto::text::MAX_TEXT))
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let label = answer.action.replace(' ', "_");
    match answer.action.as_str() {
        "reject" => {
            metrics().spam_scan("reject");
            Verdict::Reject(said("message refused as spam"))
        }
        "soft reject" | "greylist" => {
            metrics().spam_scan(&label);
            Verdict::Defer(said("try again later"))
        }
        "discard" => {
            metrics().spam_scan("discard");
            Verdict::Reject(said("message refused as spam"))
        }
        "add header" | "rewrite subject" | "quarantine" => {
            // `rewrite subject`: rspamd's new subject (its `subject` field) is not
            // used; the message goes to Junk with its own subject, as for `add header`.
            metrics().spam_scan(&label);
            Verdict::Junk {
                headers: headers(&report, true),
                report,
            }
        }
        "no action" => {
            metrics().spam_scan("no_action");
            Verdict::Accept {
                headers: headers(&report, false),
                report: Some(report),
            }
        }
        _ => {
            // An action of the operator's own: treated as spam, not as clean.
            tracing::warn!(component = "spam", event = "rspamd_unknown_action", action = %report.action, "rspamd answered an action MaiRust does not know: the message goes to Junk");
            metrics().spam_scan("other");
            Verdict::Junk {
                headers: headers(&report, true),
                report,
            }
        }
    }
}

/// Why a scan gave no verdict.
enum Failure {
    /// No answer: connection refused, timeout, 5xx. Counts for the breaker.
    Unavailable(String),
    /// An answer that cannot be used (4xx, too long, not JSON): this message only.
    Unusable(String),
}

/// Records a call's end in the breaker when dropped (`None`: nothing to record).
struct Outcome<'a> {
    rspamd: &'a Rspamd,
    ok: Option<bool>,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        let Some(ok) = self.ok else {
            return;
        };
        let transition = self
            .rspamd
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(ok, Instant::now(), self.rspamd.thresholds());
        log_transition(transition);
    }
}

fn log_transition(transition: Option<Transition>) {
    match transition {
        Some(Transition::Opened) => tracing::warn!(
            component = "spam",
            event = "rspamd_breaker_opened",
            "rspamd breaker opened: messages get spam.rspamd.on_error without a call"
        ),
        Some(Transition::HalfOpened) => tracing::info!(
            component = "spam",
            event = "rspamd_breaker_half_open",
            "rspamd breaker half-open: one trial scan"
        ),
        Some(Transition::Closed) => tracing::info!(
            component = "spam",
            event = "rspamd_breaker_closed",
            "rspamd answers again"
        ),
        None => {}
    }
}

/// A value fit for an HTTP header: no control characters.
fn header_safe(value: &str) -> bool {
    !value.is_empty() && value.len() <= 1024 && !value.chars().any(|c| c.is_control())
}

/// `X-Spam-Flag` (spam only), `X-Spam-Score`, `X-Spam-Status` and `X-Spam-Action`, from
/// a report whose words [`verdict`] made safe. The symbols of `X-Spam-Status` are
/// folded onto more lines rather than passing [`FOLD_AT`] characters on one.
fn headers(report: &Report, spam: bool) -> String {
    let mut out = String::new();
    if spam {
        out.push_str("X-Spam-Flag: YES\r\n");
    }
    out.push_str(&format!("X-Spam-Score: {}\r\n", shown(report.score)));
    out.push_str(&format!(
        "X-Spam-Status: {}, score={} required={}\r\n",
        if spam { "Yes" } else { "No" },
        shown(report.score),
        shown(report.required_score),
    ));
    let mut line = String::from("\ttests=[");
    for (i, (name, score)) in report.symbols.iter().take(STATUS_SYMBOLS).enumerate() {
        let item = format!("{name}({})", shown(*score));
        if i > 0 {
            line.push(',');
            // The item, and the `,` or `]` after it, must fit on this line.
            if line.len() + 1 + item.len() + 1 > FOLD_AT {
                out.push_str(&line);
                out.push_str("\r\n");
                line = String::from("\t");
            } else {
                line.push(' ');
            }
        }
        line.push_str(&item);
    }
    out.push_str(&line);
    out.push_str("]\r\n");
    out.push_str(&format!("X-Spam-Action: {}\r\n", report.action));
    out
}

/// A score as the headers show it: two decimals, within ±[`MAX_SHOWN_SCORE`].
fn shown(score: f64) -> String {
    format!("{:.2}", score.clamp(-MAX_SHOWN_SCORE, MAX_SHOWN_SCORE))
}

/// `text` as printable ASCII, fit for a header field or a reply line: every other
/// character (CR, LF, tabs and other controls, anything not ASCII) becomes `?`, and it
/// is cut at `max` bytes.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(max)
        .collect()
}

/// A symbol name as kept and shown: rspamd's own are letters, digits, `_`, `.` and
/// `-`; any other character becomes `_`, and the name is cut at [`MAX_SYMBOL`] bytes.
/// `None` for an empty name.
fn symbol_name(name: &str) -> Option<String> {
    let name: String = name
        .chars()
        .take(MAX_SYMBOL)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Whether a header field name is a spam verdict (`X-Spam-*`, `X-Spam`, `X-Spamd-*`,
/// `X-Rspamd-*`): the copies a message arrives with are removed, so only ours is shown.
pub fn is_spam_header(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    name == "x-spam"
        || name.starts_with("x-spam-")
        || name.starts_with("x-spamd-")
        || name.starts_with("x-rspamd-")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer shaped like rspamd 3.4's `/checkv2` JSON (fields MaiRust does not read
    /// included), with `action` and, when given, `messages.smtp_message`.
    fn answer(action: &str, smtp_message: Option<&str>) -> Answer {
        let mut json = serde_json::json!({
            "is_skipped": false,
            "score": 7.5,
            "required_score": 15.0,
            "action": action,
            "symbols": {
                "MISSING_MID": {"name": "MISSING_MID", "score": 2.5, "metric_score": 2.5,
                    "description": "Message id is missing"},
                "FROM_HAS_DN": {"name": "FROM_HAS_DN", "score": 0.0, "metric_score": 0.0,
                    "description": "From header has a display name"},
                "RCPT_COUNT_ONE": {"name": "RCPT_COUNT_ONE", "score": 0.0, "metric_score": 0.0,
                    "description": "One recipient", "options": ["1"]},
                "BAYES_SPAM": {"name": "BAYES_SPAM", "score": 5.0, "metric_score": 5.0,
                    "options": ["99.99%"]}
            },
            "messages": {},
            "message-id": "scan@sender.test",
            "time_real": 0.012
        });
        if action == "rewrite subject" {
            json["subject"] = "*** SPAM *** scan".into();
        }
        if let Some(m) = smtp_message {
            json["messages"]["smtp_message"] = m.into();
        }
        serde_json::from_value(json).expect("an rspamd answer")
    }

    /// The headers of [`answer`]'s report: the symbols highest score first, then by
    /// name, folded before 78 characters.
    fn expected_headers(spam: bool, action: &str) -> String {
        format!(
            "{}X-Spam-Score: 7.50\r\nX-Spam-Status: {}, score=7.50 required=15.00\r\n\ttests=[BAYES_SPAM(5.00), MISSING_MID(2.50), FROM_HAS_DN(0.00),\r\n\tRCPT_COUNT_ONE(0.00)]\r\nX-Spam-Action: {action}\r\n",
            if spam { "X-Spam-Flag: YES\r\n" } else { "" },
            if spam { "Yes" } else { "No" },
        )
    }

    #[test]
    fn each_action_has_its_verdict() {
        let refused = |text: &str| Verdict::Reject(text.into());
        assert_eq!(
            verdict(answer("reject", Some("Gtube pattern"))),
            refused("Gtube pattern")
        );
        assert_eq!(
            verdict(answer("reject", None)),
            refused("message refused as spam")
        );
        assert_eq!(
            verdict(answer("discard", Some("  "))),
            refused("message refused as spam")
        );
        // soft reject and greylist: 451 4.7.1 with rspamd's text, or ours.
        assert_eq!(
            verdict(answer("soft reject", Some("busy, come back later"))),
            Verdict::Defer("busy, come back later".into())
        );
        assert_eq!(
            verdict(answer("greylist", None)),
            Verdict::Defer("try again later".into())
        );
        // Spam kept: our headers and the Junk mailbox. `rewrite subject` does not
        // rewrite the subject (rspamd's `subject` field is not used).
        for action in [
            "add header",
            "rewrite subject",
            "quarantine",
            "my own action",
        ] {
            let Verdict::Junk { headers, report } = verdict(answer(action, None)) else {
                panic!("{action}: not Junk");
            };
            assert_eq!(headers, expected_headers(true, action), "{action}");
            assert_eq!(report.action, action);
            assert_eq!((report.score, report.required_score), (7.5, 15.0));
            assert_eq!(
                report.symbols,
                [
                    ("BAYES_SPAM".to_string(), 5.0),
                    ("MISSING_MID".to_string(), 2.5),
                    ("FROM_HAS_DN".to_string(), 0.0),
                    ("RCPT_COUNT_ONE".to_string(), 0.0),
                ]
            );
        }
        let Verdict::Accept {
            headers,
            report: Some(report),
        } = verdict(answer("no action", None))
        else {
            panic!("no action: not accepted with a report");
        };
        assert_eq!(headers, expected_headers(false, "no action"));
        assert_eq!(report.action, "no action");
    }

    #[test]
    fn what_rspamd_says_cannot_add_header_or_reply_lines() {
        let mut json = serde_json::json!({
            "score": 1e300,
            "required_score": -1e300,
            "action": "add header\r\nX-Injected: action\u{7f}\u{e9}",
            "symbols": {
                "EVIL\r\nX-Injected: symbol": {"score": 1.0},
                "sp ace/\u{fc}n\u{ef}": {"score": 0.5},
                "": {"score": 9.0}
            },
            "messages": {}
        });
        let long = "L".repeat(500);
        json["symbols"][long.as_str()] = serde_json::json!({"score": 0.25});
        let spam: Answer = serde_json::from_value(json.clone()).unwrap();
        let Verdict::Junk { headers, report } = verdict(spam) else {
            panic!("an unknown action is spam");
        };
        // Every line is one of our fields or a folded continuation of one, printable
        // ASCII, and short.
        let lines: Vec<&str> = headers
            .strip_suffix("\r\n")
            .unwrap()
            .split("\r\n")
            .collect();
        assert_eq!(lines.len(), 6, "{headers}");
        for line in &lines {
            assert!(
                line.starts_with("X-Spam-") || line.starts_with('\t'),
                "{line:?} in {headers}"
            );
            assert!(
                line.bytes()
                    .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)),
                "{line:?}"
            );
            assert!(line.len() <= FOLD_AT, "{line:?}");
        }
        assert_eq!(lines[1], "X-Spam-Score: 1000000.00");
        assert_eq!(
            lines[2],
            "X-Spam-Status: Yes, score=1000000.00 required=-1000000.00"
        );
        assert_eq!(lines[5], "X-Spam-Action: add header??X-Injected: action??");
        // The stored report holds the same safe words; a nameless symbol is dropped.
        assert_eq!(report.action, "add header??X-Injected: action??");
        let names: Vec<&str> = report.symbols.iter().map(|(n, _)| n.as_str()).collect();
        let cut = "L".repeat(MAX_SYMBOL);
        assert_eq!(
            names,
            ["EVIL__X-Injected__symbol", "sp_ace__n_", cut.as_str()]
        );
        for name in names {
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
                "{name}"
            );
        }

        // rspamd's SMTP message goes into our reply line: one line of printable ASCII,
        // no longer than any remote text we keep.
        json["action"] = "reject".into();
        json["messages"]["smtp_message"] = "bad\r\n250 2.0.0 ok\t\u{df}".into();
        let refused: Answer = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(
            verdict(refused),
            Verdict::Reject("bad??250 2.0.0 ok??".into())
        );
        json["action"] = "soft reject".into();
        json["messages"]["smtp_message"] = "x".repeat(4000).into();
        let deferred: Answer = serde_json::from_value(json).unwrap();
        assert_eq!(
            verdict(deferred),
            Verdict::Defer("x".repeat(crate::proto::text::MAX_TEXT))
        );
    }
}
