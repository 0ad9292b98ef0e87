//! One hook as the dispatcher holds it: its configuration, where it is defined, and
//! its circuit breaker, whose every change of state it logs for the operator.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::breaker::{Breaker, BreakerState, Thresholds, Transition};
use super::target::TargetRefused;
use crate::config::HookConfig;

/// Where a hook is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HookSource {
    /// config.yaml: read-only through the API.
    Config,
    /// Created through the API, stored in the database.
    Api,
}

pub(super) struct Hook {
    pub(super) config: HookConfig,
    pub(super) source: HookSource,
    /// Locked only for a state change, never across a call: many sessions consult
    /// it at once.
    breaker: Mutex<Breaker>,
}

impl Hook {
    pub(super) fn new(config: HookConfig, source: HookSource, breaker: Breaker) -> Hook {
        Hook {
            config,
            source,
            breaker: Mutex::new(breaker),
        }
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            failures: self.config.breaker_failures,
            cooldown: Duration::from_secs_f64(self.config.breaker_cooldown_seconds),
        }
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether to call at `now`; moves an open breaker past its cool-down to half-open.
    pub(super) fn admit(&self, now: Instant) -> bool {
        let (admitted, transition) = self.breaker().admit(now, self.thresholds());
        self.log(transition);
        admitted
    }

    /// Records how an admitted call ended, at `now`.
    pub(super) fn record(&self, ok: bool, now: Instant) {
        let transition = self.breaker().record(ok, now, self.thresholds());
        self.log(transition);
    }

    pub(super) fn state(&self, now: Instant) -> BreakerState {
        self.breaker().state(now, self.thresholds())
    }

    /// The breaker a rebuilt hook set gives the hook with this one's id
    /// ([`Breaker::carried`]).
    pub(super) fn carried_breaker(&self, now: Instant) -> Breaker {
        self.breaker().carried(now)
    }

    fn log(&self, transition: Option<Transition>) {
        match transition {
            None => {}
            Some(Transition::HalfOpened) => {
                tracing::info!(component = "hook", hook = %self.config.id, event = "breaker_half_open", "circuit breaker half-open: one trial call");
            }
            Some(Transition::Closed) => {
                tracing::info!(component = "hook", hook = %self.config.id, event = "breaker_closed", "circuit breaker closed");
            }
            Some(Transition::Opened) => {
                tracing::warn!(component = "hook", hook = %self.config.id, event = "breaker_open", cooldown_seconds = self.config.breaker_cooldown_seconds, "circuit breaker open: hook skipped until the cool-down ends");
            }
        }
    }

    /// The warning an operator alerts on when this hook's target is refused.
    pub(super) fn log_refusal(&self, refused: &TargetRefused) {
        tracing::warn!(component = "hook", hook = %self.config.id, event = "hook_target_refused", host = %refused.host, address = %refused.address, range = refused.range.name(), "hook not called: its target address is not in hook_policy.allowed_networks");
    }
}
