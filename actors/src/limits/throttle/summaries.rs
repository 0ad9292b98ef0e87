//! The failed-AUTH summaries in the audit log: every `auth.audit_summary_seconds`, and
//! once more when shutdown begins, what [`super::AuthThrottle::take_summaries`] collected
//! becomes `auth.login_failures` entries.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Summary;
use crate::audit::{AuditLog, Entry};
use crate::limits::NodeLimits;
use crate::shutdown::Phase;

/// Addresses written one by one per summary (the busiest); the rest in one entry.
const SUMMARY_ENTRIES: usize = 100;

/// Writes the failed-AUTH summaries every `auth.audit_summary_seconds` (`auth.login_failures`,
/// one audit entry per address, the busiest [`SUMMARY_ENTRIES`] addresses only plus one
/// entry for the rest), and once more when shutdown begins.
pub fn spawn_summaries(
    period: Duration,
    audit: Arc<AuditLog>,
    limits: Arc<NodeLimits>,
    mut shutdown: tokio::sync::watch::Receiver<Phase>,
) {
    actix::spawn(async move {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(period) => false,
                _ = shutdown.wait_for(|p| *p != Phase::Running) => true,
            };
            write_summaries(&audit, limits.auth.take_summaries(), period).await;
            if stopping {
                return;
            }
        }
    });
}

async fn write_summaries(
    audit: &AuditLog,
    mut summaries: Vec<(IpAddr, Summary)>,
    period: Duration,
) {
    summaries.sort_by_key(|(_, s)| std::cmp::Reverse(s.failures + s.refused + s.busy));
    let rest = summaries.split_off(summaries.len().min(SUMMARY_ENTRIES));
    let period = period.as_secs();
    for (address, s) in summaries {
        let accounts: Vec<&str> = s.accounts.iter().map(String::as_str).collect();
        tracing::warn!(component = "smtp", event = "auth_failures_summary", remote = %address, failures = s.failures, refused = s.refused, busy = s.busy, "failed authentications from one address");
        audit
            .record(
                Entry::failure("auth.login_failures", "smtp")
                    .remote(address)
                    .detail("failures", s.failures)
                    .detail("refused_locked_out", s.refused)
                    .detail("refused_busy", s.busy)
                    .detail("accounts", accounts)
                    .detail("period_seconds", period),
            )
            .await;
    }
    if !rest.is_empty() {
        let failures: u64 = rest.iter().map(|(_, s)| u64::from(s.failures)).sum();
        let refused: u64 = rest.iter().map(|(_, s)| u64::from(s.refused)).sum();
        let busy: u64 = rest.iter().map(|(_, s)| u64::from(s.busy)).sum();
        tracing::warn!(
            component = "smtp",
            event = "auth_failures_summary",
            addresses = rest.len(),
            failures,
            refused,
            busy,
            "failed authentications from many more addresses"
        );
        audit
            .record(
                Entry::failure("auth.login_failures", "smtp")
                    .detail("addresses", rest.len())
                    .detail("failures", failures)
                    .detail("refused_locked_out", refused)
                    .detail("refused_busy", busy)
                    .detail("period_seconds", period),
            )
            .await;
    }
}
