//! Prometheus metrics (SPEC O1): one registry for the process, served at `/metrics` by the
//! HTTP server, whose access-log middleware counts API requests ([`Metrics::api_request`]).
//!
//! Labels are low-cardinality only: listener, result, reply code, dependency, hook id
//! (operator-defined, bounded), API route pattern, method and status class. Never an
//! address, a message id, a client IP or a raw request path. Hot paths
//! use children resolved once ([`SmtpMetrics`] per listener) so counting is an atomic add.

use std::sync::LazyLock;

mod process;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::net::ListenerKind;

/// Per-listener SMTP metrics, resolved once.
pub struct SmtpMetrics {
    pub connections: IntCounter,
    pub sessions: IntGauge,
    accepted: IntCounter,
    rejected: IntCounter,
    tempfailed: IntCounter,
    duration: Histogram,
    auth_success: IntCounter,
    auth_failure: IntCounter,
    errors: IntCounterVec,
    listener: &'static str,
}

impl SmtpMetrics {
    /// A transaction ended with `code` after DATA; `started` at its MAIL FROM.
    pub fn transaction(&self, code: u16, started: Option<std::time::Instant>) {
        match code {
            200..=299 => self.accepted.inc(),
            400..=499 => self.tempfailed.inc(),
            _ => self.rejected.inc(),
        }
        if let Some(started) = started {
            self.duration.observe(started.elapsed().as_secs_f64());
        }
    }

    pub fn auth(&self, ok: bool) {
        if ok {
            self.auth_success.inc();
        } else {
            self.auth_failure.inc();
        }
    }

    /// Counts a 4xx/5xx reply by its basic code.
    pub fn error_reply(&self, code: u16) {
        if code >= 400 {
            self.errors
                .with_label_values(&[self.listener, code.to_string().as_str()])
                .inc();
        }
    }
}

/// The reply codes `mairust_smtp_errors_total` lists from the start (at 0), per
/// listener; others appear when first sent.
pub const SMTP_ERROR_CODES: [u16; 16] = [
    421, 450, 451, 452, 454, 500, 501, 502, 503, 504, 530, 535, 550, 552, 553, 554,
];

/// Every result `mairust_hook_calls_total` counts.
pub const HOOK_RESULTS: [&str; 7] = [
    "allow", "reject", "tempfail", "invalid", "timeout", "error", "skipped",
];

pub struct Metrics {
    pub registry: Registry,
    smtp: [SmtpMetrics; 3],
    pub queue_length: IntGauge,
    pub queue_oldest_seconds: IntGauge,
    /// Per recipient: delivered, deferred, bounced.
    pub queue_deliveries: IntCounterVec,
    pub storage_bytes: IntGauge,
    pub storage_limit_bytes: IntGauge,
    /// What this node's retention purges deleted: mailbox entries, messages.
    retention_purged: IntCounterVec,
    pub hook_calls: IntCounterVec,
    pub plugin_errors: IntCounterVec,
    /// DKIM signatures made for submitted mail, by algorithm and result (signed,
    /// failed), every pair present from start.
    dkim_signatures: IntCounterVec,
    /// Results of the checks of mail from other servers, by method and result, every
    /// pair present from start ([`MAIL_AUTH_METHODS`], [`MAIL_AUTH_RESULTS`]).
    mail_auth: IntCounterVec,
    /// rspamd scans by outcome ([`SPAM_RESULTS`]), every one present from start.
    spam_scans: IntCounterVec,
    /// Submissions refused by a send limit, by scope and kind, every pair from start.
    send_limit_hits: IntCounterVec,
    /// Resource limits hit by clients (`limits::Limit`), every label present from start
    /// (see [`Metrics::limit_known`]).
    limit_hits: IntCounterVec,
    /// DATA bytes held in memory (buffers and finished bodies) and spooled to disk,
    /// read from the budgets at each scrape.
    data_memory_bytes: IntGauge,
    spool_bytes: IntGauge,
    pub up: IntGaugeVec,
    /// CPU, memory and descriptors of this process, read at each scrape.
    pub process: process::ProcessMetrics,
    /// Restarts of the Supervisor's children, by kind ([`SUPERVISED_ACTORS`]).
    actor_restarts: IntCounterVec,
    api_requests: IntCounterVec,
    api_duration: HistogramVec,
}

/// The `actor` labels of `mairust_actor_restarts_total`: the kinds of children the
/// Supervisor restarts (`supervisor::ChildKind`).
pub const SUPERVISED_ACTORS: [&str; 6] = [
    "storage",
    "queue_worker",
    "smtp_listener",
    "health_monitor",
    "janitor",
    "hook_refresh",
];

/// The methods counted in `mairust_mail_auth_total` (`sender_auth`), and their
/// results (RFC 8601 §2.7). `spf` is the MAIL FROM identity, `spf_helo` the HELO one.
pub const MAIL_AUTH_METHODS: [&str; 5] = ["spf", "spf_helo", "dkim", "dmarc", "arc"];
pub const MAIL_AUTH_RESULTS: [&str; 8] = [
    "pass",
    "fail",
    "softfail",
    "neutral",
    "none",
    "temperror",
    "permerror",
    "policy",
];

/// The results of `mairust_spam_scans_total` (`spam`).
pub const SPAM_RESULTS: [&str; 11] = [
    "reject",
    "discard",
    "quarantine",
    "other",
    "soft_reject",
    "greylist",
    "add_header",
    "rewrite_subject",
    "no_action",
    "error",
    "skipped",
];

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The SMTP metrics of a listener, or `None` with `telemetry.metrics.enabled: false`
/// (then sessions count nothing at all).
pub fn smtp_if(enabled: bool, listener: ListenerKind) -> Option<&'static SmtpMetrics> {
    enabled.then(|| metrics().smtp(listener))
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: T) -> T {
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::with_opts(Opts::new(name, help)).expect("valid metric"),
    )
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let build = gauge_vec(
            &registry,
            "mairust_build_info",
            "Always 1; the version in a label",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let connections = counter_vec(
            &registry,
            "mairust_smtp_connections_total",
            "SMTP connections accepted, by listener",
            &["listener"],
        );
        let sessions = gauge_vec(
            &registry,
            "mairust_smtp_sessions",
            "Open SMTP sessions, by listener",
            &["listener"],
        );
        let messages = counter_vec(
            &registry,
            "mairust_smtp_messages_total",
            "Messages at the end of DATA, by listener and result (accepted, rejected, tempfail)",
            &["listener", "result"],
        );
        let errors = counter_vec(
            &registry,
            "mairust_smtp_errors_total",
            "SMTP 4xx and 5xx replies sent, by listener and reply code",
            &["listener", "code"],
        );
        let auth = counter_vec(
            &registry,
            "mairust_smtp_auth_total",
            "SMTP AUTH attempts, by listener and result (success, failure)",
            &["listener", "result"],
        );
        let duration = histogram_vec(
            &registry,
            "mairust_smtp_duration_seconds",
            "Whole SMTP transactions, MAIL FROM to the reply after DATA, by listener",
            &["listener"],
            vec![
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
            ],
        );
        for kind in [
            ListenerKind::Inbound,
            ListenerKind::Submission,
            ListenerKind::Submissions,
        ] {
            for code in SMTP_ERROR_CODES {
                errors.with_label_values(&[kind.name(), code.to_string().as_str()]);
            }
        }
        let smtp = [
            ListenerKind::Inbound,
            ListenerKind::Submission,
            ListenerKind::Submissions,
        ]
        .map(|kind| {
            let l = kind.name();
            SmtpMetrics {
                connections: connections.with_label_values(&[l]),
                sessions: sessions.with_label_values(&[l]),
                accepted: messages.with_label_values(&[l, "accepted"]),
                rejected: messages.with_label_values(&[l, "rejected"]),
                tempfailed: messages.with_label_values(&[l, "tempfail"]),
                duration: duration.with_label_values(&[l]),
                auth_success: auth.with_label_values(&[l, "success"]),
                auth_failure: auth.with_label_values(&[l, "failure"]),
                errors: errors.clone(),
                listener: l,
            }
        });
        let up = gauge_vec(
            &registry,
            "mairust_up",
            "1 when the dependency answers this node's health probe, else 0",
            &["dependency"],
        );
        for dependency in ["database", "storage"] {
            up.with_label_values(&[dependency]).set(0);
        }
        let queue_deliveries = counter_vec(
            &registry,
            "mairust_queue_deliveries_total",
            "Outbound delivery results per recipient (delivered, deferred, bounced, expired)",
            &["result"],
        );
        for result in ["delivered", "deferred", "bounced", "expired"] {
            queue_deliveries.with_label_values(&[result]);
        }
        let retention_purged = counter_vec(
            &registry,
            "mairust_retention_purged_total",
            "Soft-deleted mailbox entries (kind=entries) and the messages they were the last reference to (kind=messages) purged by this node",
            &["kind"],
        );
        for kind in ["entries", "messages"] {
            retention_purged.with_label_values(&[kind]);
        }
        let api_labels = &["route", "method", "status"];
        let api_requests = counter_vec(
            &registry,
            "mairust_api_requests_total",
            "HTTP API requests answered, by route pattern (UNMATCHED: no route), method and status class (2xx, 4xx, ...)",
            api_labels,
        );
        let api_duration = histogram_vec(
            &registry,
            "mairust_api_duration_seconds",
            "HTTP API request durations, until the answer's head is ready (body transfer not included), by route pattern, method and status class",
            api_labels,
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        );
        let actor_restarts = counter_vec(
            &registry,
            "mairust_actor_restarts_total",
            "Children of the actor tree restarted by the Supervisor after they panicked or stopped, by kind",
            &["actor"],
        );
        for actor in SUPERVISED_ACTORS {
            actor_restarts.with_label_values(&[actor]);
        }
        Metrics {
            actor_restarts,
            api_requests,
            api_duration,
            smtp,
            queue_length: gauge(
                &registry,
                "mairust_queue_length",
                "Outbound queue entries (all nodes), as of this node's last database probe",
            ),
            queue_oldest_seconds: gauge(
                &registry,
                "mairust_queue_oldest_seconds",
                "Age of the oldest outbound queue entry in seconds (0 when empty)",
            ),
            queue_deliveries,
            storage_bytes: gauge(
                &registry,
                "mairust_storage_bytes",
                "Bytes of message bodies in the store, from the database",
            ),
            storage_limit_bytes: gauge(
                &registry,
                "mairust_storage_limit_bytes",
                "storage.limit_bytes (0: no limit)",
            ),
            retention_purged,
            hook_calls: counter_vec(
                &registry,
                "mairust_hook_calls_total",
                "Hook calls, by hook and result (allow, reject, tempfail, invalid, timeout, error, skipped)",
                &["hook", "result"],
            ),
            plugin_errors: counter_vec(
                &registry,
                "mairust_plugin_errors_total",
                "Hook (plugin) calls that failed: timeouts, connection errors, bad answers",
                &["plugin"],
            ),
            dkim_signatures: {
                let dkim = counter_vec(
                    &registry,
                    "mairust_dkim_signatures_total",
                    "DKIM signatures of submitted mail, by algorithm (rsa-sha256, ed25519-sha256) and result (signed, failed)",
                    &["algorithm", "result"],
                );
                for algorithm in ["rsa-sha256", "ed25519-sha256"] {
                    for result in ["signed", "failed"] {
                        dkim.with_label_values(&[algorithm, result]);
                    }
                }
                dkim
            },
            mail_auth: {
                let checks = counter_vec(
                    &registry,
                    "mairust_mail_auth_total",
                    "Checks of mail from other servers, by method (spf: MAIL FROM, spf_helo: HELO, dkim, dmarc, arc) and result (pass, fail, softfail, neutral, none, temperror, permerror, policy)",
                    &["method", "result"],
                );
                for method in MAIL_AUTH_METHODS {
                    for result in MAIL_AUTH_RESULTS {
                        checks.with_label_values(&[method, result]);
                    }
                }
                checks
            },
            spam_scans: {
                let scans = counter_vec(
                    &registry,
                    "mairust_spam_scans_total",
                    "rspamd scans by result: reject, discard, soft_reject, greylist, add_header, rewrite_subject, quarantine, no_action, other (an unknown action), error (no answer), skipped (breaker open)",
                    &["result"],
                );
                for result in SPAM_RESULTS {
                    scans.with_label_values(&[result]);
                }
                scans
            },
            send_limit_hits: {
                let hits = counter_vec(
                    &registry,
                    "mairust_send_limit_hits_total",
                    "Submissions refused by send_limits, by scope (account, domain) and kind (messages, recipients)",
                    &["scope", "kind"],
                );
                for scope in ["account", "domain"] {
                    for kind in ["messages", "recipients"] {
                        hits.with_label_values(&[scope, kind]);
                    }
                }
                hits
            },
            limit_hits: counter_vec(
                &registry,
                "mairust_limit_hits_total",
                "Resource limits hit by clients: auth_busy, auth_locked, data_spooled, data_memory, data_rate, session_lifetime, write_timeout",
                &["limit"],
            ),
            data_memory_bytes: gauge(
                &registry,
                "mairust_smtp_data_memory_bytes",
                "DATA bytes held in memory by sessions: bodies arriving and bodies being stored (smtp.limits.max_inflight_data_bytes)",
            ),
            spool_bytes: gauge(
                &registry,
                "mairust_smtp_spool_bytes",
                "DATA bytes spooled to disk by sessions (smtp.limits.max_spool_bytes)",
            ),
            up,
            process: process::ProcessMetrics::new(&registry),
            registry,
        }
    }

    /// DATA bytes held in memory and spooled to disk (`NodeLimits::report_data_bytes`,
    /// at each scrape).
    pub fn set_data_bytes(&self, in_memory: usize, spooled: usize) {
        self.data_memory_bytes.set(in_memory as i64);
        self.spool_bytes.set(spooled as i64);
    }

    /// Counts what one purge run deleted (`retention::purge`).
    pub fn retention_purged(&self, entries: u64, messages: u64) {
        self.retention_purged
            .with_label_values(&["entries"])
            .inc_by(entries);
        self.retention_purged
            .with_label_values(&["messages"])
            .inc_by(messages);
    }

    /// Counts one DKIM signature made (`signed`) or that could not be made (`failed`).
    pub fn dkim_signature(&self, algorithm: &str, result: &str) {
        self.dkim_signatures
            .with_label_values(&[algorithm, result])
            .inc();
    }

    /// Counts one result of a check of mail from another server.
    pub fn mail_auth(&self, method: &str, result: &str) {
        self.mail_auth.with_label_values(&[method, result]).inc();
    }

    /// Counts one rspamd scan by result.
    pub fn spam_scan(&self, result: &str) {
        self.spam_scans.with_label_values(&[result]).inc();
    }

    /// Counts a submission a send limit refused.
    pub fn send_limit_hit(&self, scope: &str, kind: &str) {
        self.send_limit_hits.with_label_values(&[scope, kind]).inc();
    }

    /// Makes a hook's series exist at 0 from the moment it is defined, so a hook
    /// that never failed shows 0 failures rather than nothing.
    pub fn hook_known(&self, id: &str) {
        for result in HOOK_RESULTS {
            self.hook_calls.with_label_values(&[id, result]);
        }
        self.plugin_errors.with_label_values(&[id]);
    }

    /// Drops a removed hook's series (API-made hooks come and go; their series must
    /// not pile up).
    pub fn hook_removed(&self, id: &str) {
        for result in HOOK_RESULTS {
            let _ = self.hook_calls.remove_label_values(&[id, result]);
        }
        let _ = self.plugin_errors.remove_label_values(&[id]);
    }

    /// Counts a restart of a supervised child of kind `actor` (one of [`SUPERVISED_ACTORS`]).
    pub fn actor_restarted(&self, actor: &str) {
        self.actor_restarts.with_label_values(&[actor]).inc();
    }

    /// Counts a resource limit a client ran into (`limits::hit`).
    pub fn limit_hit(&self, limit: &str) {
        self.limit_hits.with_label_values(&[limit]).inc();
    }

    /// Makes a limit's series exist at 0 before its first hit, so every limit is
    /// listed from the start (`NodeLimits::new` names them all).
    pub fn limit_known(&self, limit: &str) {
        self.limit_hits.with_label_values(&[limit]);
    }

    /// One answered API request: `route` is the matched pattern (`/api/v1/messages/{id}`)
    /// or `UNMATCHED`; methods outside HTTP's own are counted as `OTHER`.
    pub fn api_request(&self, route: &str, method: &str, status: u16, took: std::time::Duration) {
        const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
        let method = METHODS
            .into_iter()
            .find(|m| *m == method)
            .unwrap_or("OTHER");
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = [route, method, class];
        self.api_requests.with_label_values(&labels).inc();
        self.api_duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn smtp(&self, listener: ListenerKind) -> &SmtpMetrics {
        match listener {
            ListenerKind::Inbound => &self.smtp[0],
            ListenerKind::Submission => &self.smtp[1],
            ListenerKind::Submissions => &self.smtp[2],
        }
    }
}
