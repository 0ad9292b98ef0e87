//! When a child that ended comes back: after a backoff that doubles with each restart
//! (100 ms up to 10 s), within a budget of restarts per window (5 in 60 s). A child that
//! spends its budget stays down and the node reports itself unhealthy: a child failing
//! in a loop is a bug or a broken host, and restarting it for ever would hide that.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restarts allowed to one child within [`WINDOW`].
pub const MAX_RESTARTS: usize = 5;
/// The window the restart budget counts over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Wait before the first restart in a window.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One child's recent restarts.
#[derive(Debug, Default)]
pub struct RestartHistory {
    /// When the restarts within the window were granted, oldest first.
    restarts: VecDeque<Instant>,
}

impl RestartHistory {
    /// The child ended at `now`: how long to wait before restarting it, or `None` when
    /// its budget is spent (it stays down).
    pub fn next_restart(&mut self, now: Instant) -> Option<Duration> {
        while self
            .restarts
            .front()
            .is_some_and(|at| now.duration_since(*at) >= WINDOW)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= MAX_RESTARTS {
            return None;
        }
        let wait = backoff(self.restarts.len());
        self.restarts.push_back(now);
        Some(wait)
    }

    /// Restarts granted within the window (the one just granted included).
    pub fn recent(&self) -> usize {
        self.restarts.len()
    }
}

/// The wait before a restart that follows `earlier` restarts within the window.
fn backoff(earlier: usize) -> Duration {
    let doublings = u32::try_from(earlier).unwrap_or(u32::MAX);
    FIRST_BACKOFF
        .checked_mul(2u32.saturating_pow(doublings))
        .map_or(MAX_BACKOFF, |wait| wait.min(MAX_BACKOFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_until_the_budget_is_spent() {
        let mut history = RestartHistory::default();
        let start = Instant::now();
        let delays: Vec<Option<Duration>> = (0..6)
            .map(|i| history.next_restart(start + Duration::from_secs(i)))
            .collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1600), None],
            "five restarts in a minute, the sixth refused"
        );
        assert_eq!(history.recent(), MAX_RESTARTS);
    }

    #[test]
    fn restarts_older_than_the_window_are_forgotten() {
        let mut history = RestartHistory::default();
        let start = Instant::now();
        for i in 0..MAX_RESTARTS as u64 {
            assert!(
                history
                    .next_restart(start + Duration::from_secs(i))
                    .is_some()
            );
        }
        assert_eq!(history.next_restart(start + Duration::from_secs(30)), None);
        // A minute after the first restart, one place is free again, at a backoff
        // that still counts the four restarts within the window.
        assert_eq!(
            history.next_restart(start + WINDOW),
            Some(Duration::from_millis(1600))
        );
        assert_eq!(history.recent(), MAX_RESTARTS);
        // Long quiet: the history is empty, the backoff short again.
        assert_eq!(
            history.next_restart(start + WINDOW * 3),
            Some(FIRST_BACKOFF)
        );
        assert_eq!(history.recent(), 1);
    }

    #[test]
    fn the_backoff_never_exceeds_its_cap() {
        assert_eq!(backoff(6), Duration::from_millis(6400));
        assert_eq!(backoff(7), MAX_BACKOFF, "12.8 s is capped");
        assert_eq!(backoff(40), MAX_BACKOFF);
        assert_eq!(backoff(usize::MAX), MAX_BACKOFF);
    }
}
