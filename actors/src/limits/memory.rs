//! The node-wide budget of DATA bytes held in memory: session buffers and finished
//! bodies on their way to storage. Without it, 40 sessions each sending 24 MiB and
//! withholding the final dot held a gigabyte. A session holds a [`Reservation`] that
//! grows with its buffer; when the budget is spent it spools to disk instead of
//! waiting. Counted in KiB so the budget fits a semaphore. The same type bounds the
//! bytes spooled to disk (`smtp.limits.max_spool_bytes`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const UNIT: usize = 1024;

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

#[derive(Clone)]
pub struct DataBudget {
    units: Arc<Semaphore>,
    total_units: usize,
}

/// Bytes of the budget held by one session; returned when dropped.
#[derive(Default)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }

    /// Gives everything back.
    pub fn release(&mut self) {
        self.permit = None;
    }

    fn add(&mut self, permit: OwnedSemaphorePermit) {
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
    }
}

impl DataBudget {
    pub fn new(bytes: usize) -> Self {
        let total_units = units(bytes).clamp(1, Semaphore::MAX_PERMITS);
        DataBudget {
            units: Arc::new(Semaphore::new(total_units)),
            total_units,
        }
    }

    /// Grows `held` to cover `bytes` if the budget has room now; false otherwise (the
    /// caller spools instead).
    pub fn try_grow(&self, held: &mut Reservation, bytes: usize) -> bool {
        let need = units(bytes).saturating_sub(held.bytes() / UNIT);
        if need == 0 {
            return true;
        }
        let Ok(need) = u32::try_from(need) else {
            return false;
        };
        match self.units.clone().try_acquire_many_owned(need) {
            Ok(permit) => {
                held.add(permit);
                true
            }
            Err(_) => false,
        }
    }

    /// Grows `held` to cover `bytes`, waiting up to `wait` for others to give back;
    /// false when the time ran out (or `bytes` exceeds the whole budget).
    pub async fn grow(&self, held: &mut Reservation, bytes: usize, wait: Duration) -> bool {
        let need = units(bytes).saturating_sub(held.bytes() / UNIT);
        if need == 0 {
            return true;
        }
        if need > self.total_units {
            return false;
        }
        let Ok(need) = u32::try_from(need) else {
            return false;
        };
        match tokio::time::timeout(wait, self.units.clone().acquire_many_owned(need)).await {
            Ok(Ok(permit)) => {
                held.add(permit);
                true
            }
            _ => false,
        }
    }

    /// Bytes of the budget held right now, over all sessions.
    pub fn in_use(&self) -> usize {
        (self.total_units - self.units.available_permits()) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_grow_within_the_budget_and_return_on_drop() {
        let budget = DataBudget::new(10 * UNIT);
        let mut a = Reservation::default();
        assert!(budget.try_grow(&mut a, 3000));
        assert_eq!(a.bytes(), 3 * UNIT);
        assert!(budget.try_grow(&mut a, 8 * UNIT));
        assert_eq!(budget.in_use(), 8 * UNIT);
        let mut b = Reservation::default();
        assert!(!budget.try_grow(&mut b, 3 * UNIT));
        assert!(
            !budget
                .grow(&mut b, 3 * UNIT, Duration::from_millis(20))
                .await
        );
        drop(a);
        assert!(
            budget
                .grow(&mut b, 3 * UNIT, Duration::from_millis(20))
                .await
        );
        assert!(!budget.grow(&mut b, 11 * UNIT, Duration::from_secs(5)).await);
        b.release();
        assert_eq!(budget.in_use(), 0);
    }
}
