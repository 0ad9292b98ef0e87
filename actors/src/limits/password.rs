//! A node-wide bound on concurrent password work. One argon2id check takes ~19 MiB and
//! tens of milliseconds of CPU on a blocking thread; without a bound, a burst of wrong
//! passwords took gigabytes and starved every other user of the blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::accounts;

/// Every slot was taken and the short queue before them was full (or the wait in it ran
/// out): answer 454 4.7.0 (SMTP) or 503 (API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks running; try again shortly")]
pub struct Busy;

/// A taken slot of the [`PasswordGate`].
pub struct Slot(OwnedSemaphorePermit);

impl Slot {
    /// Runs `work` on the blocking pool. The slot is held by the blocking task itself,
    /// so a caller that goes away (a dropped session) does not free it before the work
    /// is really done.
    pub async fn run<T, F>(self, work: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = self.0;
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            work()
        })
        .await
        .map_err(|_| Busy)
    }
}

/// How long an attempt may wait in the queue for a slot.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Runs password checks and hashes on the blocking pool, at most `slots` at once. A
/// short queue absorbs a burst of real logins (every mail client starting at nine);
/// past it, and after [`QUEUE_WAIT`] in it, the answer is [`Busy`]. Waiting costs no
/// memory to speak of: the 19 MiB are taken only with a slot. With two slots or more,
/// one is kept for known clients (an address that logged into the account before), so
/// guessers who take every open slot and the queue do not lock real users out.
#[derive(Clone)]
pub struct PasswordGate {
    open: Arc<Semaphore>,
    reserved: Option<Arc<Semaphore>>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

/// Leaves the queue when dropped.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordGate {
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        let slots = slots.max(1);
        PasswordGate {
            open: Arc::new(Semaphore::new(if slots >= 2 { slots - 1 } else { 1 })),
            reserved: (slots >= 2).then(|| Arc::new(Semaphore::new(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
        }
    }

    /// A slot: a free one at once (`known`: the reserved one too), else a place in the
    /// queue for up to [`QUEUE_WAIT`]. Take it before any other work for the attempt (a
    /// database lookup), so a refused attempt costs nothing.
    pub async fn slot(&self, known: bool) -> Result<Slot, Busy> {
        let reserved = self.reserved.as_ref().filter(|_| known);
        let now = self
            .open
            .clone()
            .try_acquire_owned()
            .or_else(|e| match reserved {
                Some(r) => r.clone().try_acquire_owned(),
                None => Err(e),
            });
        if let Ok(permit) = now {
            return Ok(Slot(permit));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            super::hit(super::Limit::AuthBusy);
            return Err(Busy);
        }
        let _queued = Waiting(self.waiting.clone());
        match tokio::time::timeout(QUEUE_WAIT, self.open.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot(permit)),
            _ => {
                super::hit(super::Limit::AuthBusy);
                Err(Busy)
            }
        }
    }

    /// Runs `work` if a slot is free now.
    pub async fn run<T, F>(&self, work: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.slot(false).await?.run(work).await
    }

    /// Checks `password` against a stored PHC string.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, Busy> {
        self.run(move || accounts::verify_password(&password, &phc))
            .await
    }

    /// Hashes a new password.
    pub async fn hash(
        &self,
        password: String,
    ) -> Result<Result<String, accounts::AccountError>, Busy> {
        self.run(move || accounts::hash_password(&password)).await
    }

    /// Open slots free right now.
    pub fn available(&self) -> usize {
        self.open.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_the_bound_is_busy_at_once() {
        let gate = PasswordGate::new(1, 0);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let held = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.run(move || rx.recv().ok()).await })
        };
        while gate.available() > 0 {
            tokio::task::yield_now().await;
        }
        let started = std::time::Instant::now();
        assert_eq!(gate.run(|| ()).await, Err(Busy));
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        tx.send(()).unwrap();
        assert_eq!(held.await.unwrap(), Ok(Some(())));
        assert_eq!(gate.run(|| 7).await, Ok(7));
    }

    #[tokio::test]
    async fn a_known_client_gets_the_reserved_slot() {
        let gate = PasswordGate::new(3, 0);
        let _a = gate.slot(false).await.unwrap();
        let _b = gate.slot(false).await.unwrap();
        assert!(gate.slot(false).await.is_err(), "two open slots of three");
        let known = gate.slot(true).await.expect("the reserved slot");
        assert!(gate.slot(true).await.is_err());
        drop(known);
        assert!(gate.slot(true).await.is_ok());
        let single = PasswordGate::new(1, 0);
        let _c = single.slot(false).await.unwrap();
        assert!(single.slot(true).await.is_err());
    }

    #[tokio::test]
    async fn a_burst_waits_in_a_bounded_queue() {
        let gate = PasswordGate::new(1, 2);
        let held = gate.slot(false).await.unwrap();
        let (g1, g2) = (gate.clone(), gate.clone());
        let first = tokio::spawn(async move { g1.slot(false).await.is_ok() });
        let second = tokio::spawn(async move { g2.slot(false).await.is_ok() });
        while gate.waiting.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        assert!(
            gate.slot(false).await.is_err(),
            "the queue is full: busy at once"
        );
        drop(held);
        assert!(first.await.unwrap(), "the first in the queue got the slot");
        assert!(
            second.await.unwrap(),
            "then the second, once the first let go"
        );
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
    }
}
