//! The circuit breaker of one hook (SPEC M9): closed → open after `breaker_failures`
//! consecutive failures → half-open after `breaker_cooldown_seconds` (one trial call
//! goes through) → closed when the trial succeeds, open again when it fails.
//!
//! The breaker itself is a value that is told the time; the dispatcher reads the time
//! from a [`Clock`], the system's in the server and a [`ManualClock`] in tests, so
//! every transition can be tested at the exact instant it happens, without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where hook breakers read the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to: for tests of time-driven behaviour.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Instant>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            now: Mutex::new(Instant::now()),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Circuit breaker state of one hook, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    Closed { failures: u32 },
    Open { retry_in_ms: u64 },
    HalfOpen,
}

/// A change of state the log reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    HalfOpened,
    Closed,
}

/// When the breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Consecutive failures that open it (at least 1).
    pub failures: u32,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Consecutive failures so far.
    Closed(u32),
    /// Since when.
    Open(Instant),
    /// One trial call is in flight.
    HalfOpen,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::Closed(0)
    }
}

impl Breaker {
    /// Whether to call at `now`. An open breaker whose cool-down is over lets this one
    /// call through as the trial and turns half-open; while the trial runs, no other
    /// call goes through.
    pub fn admit(&mut self, now: Instant, t: Thresholds) -> (bool, Option<Transition>) {
        match *self {
            Breaker::Closed(_) => (true, None),
            Breaker::Open(since) if now.saturating_duration_since(since) >= t.cooldown => {
                *self = Breaker::HalfOpen;
                (true, Some(Transition::HalfOpened))
            }
            Breaker::Open(_) | Breaker::HalfOpen => (false, None),
        }
    }

    /// Records how an admitted call ended at `now`.
    pub fn record(&mut self, ok: bool, now: Instant, t: Thresholds) -> Option<Transition> {
        let next = match (*self, ok) {
            (_, true) => Breaker::Closed(0),
            (Breaker::Closed(n), false) if n + 1 < t.failures => Breaker::Closed(n + 1),
            (_, false) => Breaker::Open(now),
        };
        let transition = match (*self, next) {
            (Breaker::Open(_) | Breaker::HalfOpen, Breaker::Closed(_)) => Some(Transition::Closed),
            (Breaker::Closed(_) | Breaker::HalfOpen, Breaker::Open(_)) => Some(Transition::Opened),
            _ => None,
        };
        *self = next;
        transition
    }

    pub fn state(&self, now: Instant, t: Thresholds) -> BreakerState {
        match *self {
            Breaker::Closed(failures) => BreakerState::Closed { failures },
            Breaker::Open(since) => BreakerState::Open {
                retry_in_ms: t
                    .cooldown
                    .saturating_sub(now.saturating_duration_since(since))
                    .as_millis() as u64,
            },
            Breaker::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// The state a rebuilt hook set keeps: a trial in flight belongs to the old hook
    /// object, whose result nobody records any more, so the new one starts a fresh
    /// cool-down instead of waiting half-open for ever.
    pub fn carried(&self, now: Instant) -> Breaker {
        match *self {
            Breaker::HalfOpen => Breaker::Open(now),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        failures: 3,
        cooldown: Duration::from_secs(30),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Records a failure at `now` and checks that it opens the breaker for a whole
    /// cool-down counted from `now`.
    fn fails_and_opens(b: &mut Breaker, now: Instant, why: &str) {
        assert_eq!(b.record(false, now, T), Some(Transition::Opened), "{why}");
        assert_eq!(
            b.state(now, T),
            BreakerState::Open {
                retry_in_ms: 30_000
            },
            "{why}: counted from the failure"
        );
    }

    #[test]
    fn consecutive_failures_open_it_and_a_success_resets_the_count() {
        let clock = ManualClock::default();
        let mut b = Breaker::default();
        for _ in 0..2 {
            assert_eq!(b.admit(clock.now(), T), (true, None));
            assert_eq!(b.record(false, clock.now(), T), None);
        }
        assert_eq!(
            b.state(clock.now(), T),
            BreakerState::Closed { failures: 2 }
        );
        assert_eq!(b.record(true, clock.now(), T), None, "still closed");
        assert_eq!(
            b.state(clock.now(), T),
            BreakerState::Closed { failures: 0 }
        );
        for _ in 0..2 {
            b.admit(clock.now(), T);
            b.record(false, clock.now(), T);
        }
        b.admit(clock.now(), T);
        fails_and_opens(&mut b, clock.now(), "the third in a row");
    }

    #[test]
    fn the_cool_down_ends_at_its_exact_instant_with_one_trial() {
        let clock = ManualClock::default();
        let mut b = Breaker::default();
        b.record(false, clock.now(), Thresholds { failures: 1, ..T });
        clock.advance(ms(29_999));
        assert_eq!(b.admit(clock.now(), T), (false, None), "1 ms early");
        assert_eq!(
            b.state(clock.now(), T),
            BreakerState::Open { retry_in_ms: 1 }
        );
        clock.advance(ms(1));
        assert_eq!(
            b.admit(clock.now(), T),
            (true, Some(Transition::HalfOpened))
        );
        assert_eq!(b.state(clock.now(), T), BreakerState::HalfOpen);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(
            b.admit(clock.now(), T),
            (false, None),
            "one trial at a time, however long it takes"
        );
        assert_eq!(b.record(true, clock.now(), T), Some(Transition::Closed));
        assert_eq!(
            b.state(clock.now(), T),
            BreakerState::Closed { failures: 0 }
        );
        assert_eq!(b.admit(clock.now(), T), (true, None));
    }

    #[test]
    fn a_failed_trial_opens_it_for_a_whole_new_cool_down() {
        let clock = ManualClock::default();
        let mut b = Breaker::Open(clock.now());
        clock.advance(T.cooldown);
        assert!(b.admit(clock.now(), T).0);
        clock.advance(ms(500));
        fails_and_opens(&mut b, clock.now(), "one failure is enough when half-open");
        clock.advance(ms(29_999));
        assert!(!b.admit(clock.now(), T).0);
        clock.advance(ms(1));
        assert!(b.admit(clock.now(), T).0);
    }

    #[test]
    fn a_rebuild_turns_a_pending_trial_into_a_fresh_cool_down() {
        let clock = ManualClock::default();
        assert_eq!(
            Breaker::HalfOpen.carried(clock.now()),
            Breaker::Open(clock.now())
        );
        let open = Breaker::Open(clock.now());
        clock.advance(ms(10));
        assert_eq!(open.carried(clock.now()), open, "keeps its cool-down");
        assert_eq!(Breaker::Closed(2).carried(clock.now()), Breaker::Closed(2));
    }
}
