//! Spam scanning with rspamd over its HTTP protocol (`POST /checkv2`, the message as the
//! body, the envelope as headers), and what its answer does to the message.
//!
//! rspamd's action decides: `reject` → `550 5.7.1`; `soft reject` and `greylist` →
//! `451 4.7.1`; `add header` and `rewrite subject` → `X-Spam-*` headers and the
//! recipients' Junk mailbox; `no action` → the `X-Spam-*` headers only. `X-Spam-*`
//! headers the message arrived with are removed, so only rspamd's verdict is shown. A
//! scan that fails (rspamd down, an error, slower than `timeout_seconds`) follows
//! `on_error`; after `breaker_failures` such failures in a row the breaker (the hooks'
//! own, [`crate::hooks::breaker`]) opens and no call is made until the cool-down is
//! over, so a dead rspamd costs a message nothing.

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

/// What a scan found, as stored with the message and shown by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub score: f64,
    pub required_score: f64,
    /// rspamd's action: `no action`, `add header`, `rewrite subject`, `greylist`,
    /// `soft reject`, `reject`.
    pub action: String,
    /// Symbols with their scores, highest first.
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
        log_transition(transition);
        if !admitted {
            metrics().spam_scan("skipped");
            return self.failed("rspamd is not answering (its breaker is open)");
        }
        // The breaker learns how the call ended even if this future is dropped
        // mid-call (the client went away): a trial never stays in flight for ever.
        let mut outcome = Outcome {
            rspamd: self,
            ok: false,
        };
        let answer = self.call(message, &envelope).await;
        outcome.ok = answer.is_ok();
        drop(outcome);
        match answer {
            Ok(answer) => self.verdict(answer),
            Err(e) => {
                metrics().spam_scan("error");
                tracing::warn!(component = "spam", event = "rspamd_failed", error = %e, "rspamd scan failed");
                self.failed(&e)
            }
        }
    }

    async fn call(
        &self,
        message: bytes::Bytes,
        envelope: &ScanEnvelope<'_>,
    ) -> Result<Answer, String> {
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
        let mut response = request
            .body(message)
            .send()
            .await
            .map_err(|e| format!("rspamd at {}: {e}", self.url))?;
        if !response.status().is_success() {
            return Err(format!("rspamd answered HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading rspamd's answer: {e}"))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err("rspamd's answer is too long".into());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("rspamd's answer is not understood: {e}"))
    }

    fn failed(&self, why: &str) -> Verdict {
        match self.config.on_error {
            SpamOnError::Accept => Verdict::Accept {
                headers: String::new(),
                report: None,
            },
            SpamOnError::Tempfail => Verdict::Defer(format!(
                "spam scanning is unavailable, try again later ({})",
                short(why)
            )),
        }
    }

    fn verdict(&self, answer: Answer) -> Verdict {
        let mut symbols: Vec<(String, f64)> = answer
            .symbols
            .into_iter()
            .map(|(name, s)| (name, s.score))
            .collect();
        symbols.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let report = Report {
            score: answer.score,
            required_score: answer.required_score,
            action: answer.action.clone(),
            symbols,
        };
        let said = |default: &str| {
            answer
                .messages
                .smtp_message
                .as_deref()
                .map(|m| crate::proto::text::sanitize(m.trim()))
                .filter(|m| !m.is_empty())
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
            "add header" | "rewrite subject" => {
                metrics().spam_scan(&label);
                Verdict::Junk {
                    headers: headers(&report, true),
                    report,
                }
            }
            _ => {
                metrics().spam_scan("no_action");
                Verdict::Accept {
                    headers: headers(&report, false),
                    report: Some(report),
                }
            }
        }
    }
}

/// Records a call's end in the breaker when dropped.
struct Outcome<'a> {
    rspamd: &'a Rspamd,
    ok: bool,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        let transition = self.rspamd.breaker.lock().expect("rspamd breaker").record(
            self.ok,
            Instant::now(),
            self.rspamd.thresholds(),
        );
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

fn short(text: &str) -> String {
    let text = crate::proto::text::sanitize(text);
    text.chars().take(120).collect()
}

/// `X-Spam-Flag` (spam only), `X-Spam-Score`, `X-Spam-Status` and `X-Spam-Action`.
fn headers(report: &Report, spam: bool) -> String {
    let names: Vec<String> = report
        .symbols
        .iter()
        .take(STATUS_SYMBOLS)
        .map(|(name, score)| format!("{name}({score:.2})"))
        .collect();
    let mut out = String::new();
    if spam {
        out.push_str("X-Spam-Flag: YES\r\n");
    }
    out.push_str(&format!("X-Spam-Score: {:.2}\r\n", report.score));
    out.push_str(&format!(
        "X-Spam-Status: {}, score={:.2} required={:.2}\r\n\ttests=[{}]\r\n",
        if spam { "Yes" } else { "No" },
        report.score,
        report.required_score,
        names.join(", ")
    ));
    out.push_str(&format!("X-Spam-Action: {}\r\n", report.action));
    out
}

/// Whether a header field name is one of those we write (`X-Spam-*`): the copies a
/// message arrives with are removed.
pub fn is_spam_header(name: &str) -> bool {
    name.trim().to_ascii_lowercase().starts_with("x-spam-")
}
