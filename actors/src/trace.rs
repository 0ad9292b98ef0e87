//! Head sampling of SMTP transactions (SPEC O2).
//!
//! An SMTP transaction decides at MAIL FROM whether it is traced ([`sample`]), so the
//! transactions that are not (nine in ten at `sample_rate: 0.1`) cost the trace layer
//! nothing: their `smtp.transaction` span has the [`UNTRACED`] target, which the trace
//! export filters out (the logs still see it, for its `session_id`), and no child span
//! (`db.*`, `storage.*`, `hook.call`) is made under it ([`traced`], [`child_span`]).
//! The exporter's sampler keeps every root marked [`FORCE_SAMPLE`] (the decision was made
//! here); other roots (API requests, deliveries) are sampled by the exporter at the same
//! rate.

use tracing::Span;

use crate::config::TracingConfig;

/// Target of the span of a transaction that is not traced.
pub const UNTRACED: &str = "mairust_actors::untraced";

/// The span field (OpenTracing's `sampling.priority`) on a root span whose sampling was
/// decided here: `sampling.priority = 1` tells the exporter's sampler to keep it. Set on
/// a traced `smtp.transaction` and on the post_receive `hook.call` trace linked to it.
pub const FORCE_SAMPLE: &str = "sampling.priority";

/// Whether a new SMTP transaction is traced: at `sample_rate` when tracing is on.
pub fn sample(config: &TracingConfig) -> bool {
    config.enabled && config.sample_rate > 0.0 && fastrand::f64() < config.sample_rate
}

/// Whether spans made under `parent` are exported: not under an untraced transaction.
pub fn traced(parent: &Span) -> bool {
    parent.metadata().is_none_or(|m| m.target() != UNTRACED)
}

/// The span `make` builds under the current span, or no span where that one is an
/// untraced transaction (a child there would be exported as a root of its own).
pub fn child_span(make: impl FnOnce() -> Span) -> Span {
    if traced(&Span::current()) {
        make()
    } else {
        Span::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracing_at(rate: f64) -> TracingConfig {
        TracingConfig {
            enabled: true,
            sample_rate: rate,
            ..TracingConfig::default()
        }
    }

    #[test]
    fn sampling_follows_the_rate() {
        assert!(!(0..1000).any(|_| sample(&tracing_at(0.0))));
        assert!((0..1000).all(|_| sample(&tracing_at(1.0))));
        let kept = (0..10_000).filter(|_| sample(&tracing_at(0.1))).count();
        assert!((700..1300).contains(&kept), "{kept} of 10000 kept at 0.1");
        let off = TracingConfig {
            enabled: false,
            ..tracing_at(1.0)
        };
        assert!(!sample(&off));
    }

    #[test]
    fn nothing_is_made_under_an_untraced_transaction() {
        // A subscriber that tracks the current span; without one no span exists.
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let untraced = tracing::info_span!(target: UNTRACED, "smtp.transaction");
            let traced_txn = tracing::info_span!("smtp.transaction");
            assert!(!traced(&untraced));
            assert!(traced(&traced_txn));
            assert!(traced(&Span::none()));
            let under_untraced =
                untraced.in_scope(|| child_span(|| tracing::info_span!("storage.store")));
            assert!(under_untraced.is_none());
            let under_traced =
                traced_txn.in_scope(|| child_span(|| tracing::info_span!("storage.store")));
            assert!(!under_traced.is_none());
        });
    }
}
