//! A node-wide bound on concurrent password work. One argon2id check takes ~19 MiB and
//! tens of milliseconds of CPU on a blocking thread; without a bound, a burst of wrong
//! passwords took gigabytes and starved every other user of the blocking pool.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::accounts;

/// Every slot was taken: answer 454 4.7.0 (SMTP) or 503 (API) now instead of queueing.
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

/// Runs password checks and hashes on the blocking pool, at most `slots` at once. With
/// two slots or more, one is kept for known clients (an address that logged into the
/// account before), so guessers who take every open slot do not lock real users out.
#[derive(Clone)]
pub struct PasswordGate {
    open: Arc<Semaphore>,
    reserved: Option<Arc<Semaphore>>,
}

impl PasswordGate {
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        PasswordGate {
            open: Arc::new(Semaphore::new(if slots >= 2 { slots - 1 } else { 1 })),
            reserved: (slots >= 2).then(|| Arc::new(Semaphore::new(1))),
        }
    }

    /// A slot, if one is free now; `known`: the client may also use the reserved slot.
    /// Take it before any other work for the attempt (a database lookup), so a refused
    /// attempt costs nothing.
    pub fn slot(&self, known: bool) -> Result<Slot, Busy> {
        let reserved = self.reserved.as_ref().filter(|_| known);
        let permit = self
            .open
            .clone()
            .try_acquire_owned()
            .or_else(|e| match reserved {
                Some(r) => r.clone().try_acquire_owned(),
                None => Err(e),
            });
        match permit {
            Ok(permit) => Ok(Slot(permit)),
            Err(_) => {
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
        self.slot(false)?.run(work).await
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
        let gate = PasswordGate::new(1);
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

    #[test]
    fn a_known_client_gets_the_reserved_slot() {
        let gate = PasswordGate::new(3);
        let _a = gate.slot(false).unwrap();
        let _b = gate.slot(false).unwrap();
        assert!(gate.slot(false).is_err(), "two open slots of three");
        let known = gate.slot(true).expect("the reserved slot");
        assert!(gate.slot(true).is_err());
        drop(known);
        assert!(gate.slot(true).is_ok());
        let single = PasswordGate::new(1);
        let _c = single.slot(false).unwrap();
        assert!(single.slot(true).is_err());
    }
}
