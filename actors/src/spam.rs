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
            Ok(answer) => self.verdict(answer),
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
            "discard" => {
                metrics().spam_scan("discard");
                Verdict::Reject(said("message refused as spam"))
            }
            "add header" | "rewrite subject" | "quarantine" => {
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
            other => {
                // An action of the operator's own: treated as spam, not as clean.
                tracing::warn!(component = "spam", event = "rspamd_unknown_action", action = %crate::proto::text::sanitize(other), "rspamd answered an action MaiRust does not know: the message goes to Junk");
                metrics().spam_scan("other");
                Verdict::Junk {
                    headers: headers(&report, true),
                    report,
                }
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

/// Whether a header field name is a spam verdict (`X-Spam-*`, `X-Spam`, `X-Spamd-*`,
/// `X-Rspamd-*`): the copies a message arrives with are removed, so only ours is shown.
pub fn is_spam_header(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    name == "x-spam"
        || name.starts_with("x-spam-")
        || name.starts_with("x-spamd-")
        || name.starts_with("x-rspamd-")
}
