//! The node-wide budget of DATA bytes held in memory: session buffers and finished
//! bodies on their way to storage. Without it, 40 sessions each sending 24 MiB and
//! withholding the final dot held a gigabyte. A session holds a [`Reservation`] that
//! grows with its buffer; when the budget is spent it spools to disk instead of
//! waiting. Counted in KiB so the budget fits a semaphore. The same type bounds the
//! bytes spooled to disk (`smtp.limits.max_spool_bytes`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

    /// Reserves what a finished body of `size` bytes needs on its way to storage:
    /// `copies` of it may be held at once while hooks screen it, counted up to the
    /// whole budget but never less than the body itself. Waits up to `wait` for others
    /// to give back; `None` when the time ran out (counted as
    /// [`super::Limit::DataMemory`]; the caller answers "busy, try later").
    pub async fn reserve_body(
        &self,
        size: usize,
        copies: usize,
        wait: Duration,
    ) -> Option<Reservation> {
        let needed = size.saturating_mul(copies).min(self.capacity()).max(size);
        let mut reservation = Reservation::default();
        if self.grow(&mut reservation, needed, wait).await {
            Some(reservation)
        } else {
            super::hit(super::Limit::DataMemory);
            None
        }
    }

    /// Bytes of the budget held right now, over all sessions.
    pub fn in_use(&self) -> usize {
        (self.total_units - self.units.available_permits()) * UNIT
    }

    /// The whole budget in bytes.
    pub fn capacity(&self) -> usize {
        self.total_units * UNIT
    }
}

/// Bytes held per client key (see [`crate::net::client_key`]), each key bounded by `max`: so
/// one client cannot take a whole node-wide budget (the spool) from everyone else.
pub struct ClientShares {
    max: u64,
    used: Mutex<HashMap<IpAddr, u64>>,
}

/// The bytes one session holds of its client's share; returned when dropped.
pub struct Share {
    shares: Arc<ClientShares>,
    key: IpAddr,
    bytes: u64,
}

impl ClientShares {
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(ClientShares {
            max,
            used: Mutex::new(HashMap::new()),
        })
    }

    fn used(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u64>> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Grows `share` (made on first use) to `bytes` if the client's total stays within
    /// the bound; false otherwise.
    pub fn try_grow(self: &Arc<Self>, share: &mut Option<Share>, key: IpAddr, bytes: u64) -> bool {
        let held = share.as_ref().map_or(0, |s| s.bytes);
        let extra = bytes.saturating_sub(held);
        let mut used = self.used();
        let total = used.entry(key).or_insert(0);
        if *total + extra > self.max {
            if *total == 0 {
                used.remove(&key);
            }
            return false;
        }
        *total += extra;
        drop(used);
        share
            .get_or_insert_with(|| Share {
                shares: self.clone(),
                key,
                bytes: 0,
            })
            .bytes += extra;
        true
    }

    /// Bytes held by `key` now.
    pub fn held_by(&self, key: IpAddr) -> u64 {
        self.used().get(&key).copied().unwrap_or(0)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut used = self.shares.used();
        if let Some(total) = used.get_mut(&self.key) {
            *total = total.saturating_sub(self.bytes);
            if *total == 0 {
                used.remove(&self.key);
            }
        }
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

    #[test]
    fn one_client_cannot_take_more_than_its_share() {
        let shares = ClientShares::new(100);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let (mut s1, mut s2, mut s3) = (None, None, None);
        assert!(shares.try_grow(&mut s1, a, 60));
        assert!(shares.try_grow(&mut s1, a, 70));
        assert!(
            !shares.try_grow(&mut s2, a, 31),
            "a's sessions together past 100"
        );
        assert!(shares.try_grow(&mut s2, a, 30));
        assert!(shares.try_grow(&mut s3, b, 100), "b has a share of its own");
        assert_eq!(shares.held_by(a), 100);
        drop(s1);
        assert_eq!(shares.held_by(a), 30);
        drop(s2);
        assert_eq!(shares.held_by(a), 0);
        assert!(shares.used().get(&a).is_none());
    }
}
