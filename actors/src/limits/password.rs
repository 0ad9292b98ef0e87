//! A node-wide bound on concurrent password work. One argon2id check takes ~19 MiB and
//! tens of milliseconds of CPU on a blocking thread; without a bound, a burst of wrong
//! passwords took gigabytes and starved every other user of the blocking pool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Queue places held per client.
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A place in the queue, given back when dropped (also when the waiting attempt is
/// cancelled).
struct Waiting {
    total: Arc<AtomicUsize>,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
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
            per_client: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Places one client (address key) may hold: half the queue, so one client cannot
    /// fill it, while many users behind one address (an office NAT) still queue.
    fn per_client_max(&self) -> usize {
        (self.max_waiting / 2).max(1)
    }

    /// A place in the queue for `client`, if the queue and the client's share of it
    /// have room.
    fn queue_place(&self, client: IpAddr) -> Option<Waiting> {
        let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let mine = map.get(&client).copied().unwrap_or(0);
        if mine >= self.per_client_max() {
            return None;
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        map.insert(client, mine + 1);
        Some(Waiting {
            total: self.waiting.clone(),
            per_client: self.per_client.clone(),
            client,
        })
    }

    /// A slot: a free one at once (`known`: the reserved one too), else a place in the
    /// queue (at most half of it per `client`) for up to [`QUEUE_WAIT`]. A
    /// known client waits for whichever slot frees first, the reserved one included.
    /// Take it before any other work for the attempt (a database lookup), so a refused
    /// attempt costs nothing.
    pub async fn slot(&self, known: bool, client: IpAddr) -> Result<Slot, Busy> {
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
        let Some(_queued) = self.queue_place(client) else {
            super::hit(super::Limit::AuthBusy);
            return Err(Busy);
        };
        let open = self.open.clone().acquire_owned();
        let wait = async {
            match reserved {
                Some(r) => tokio::select! {
                    p = open => p,
                    p = r.clone().acquire_owned() => p,
                },
                None => open.await,
            }
        };
        match tokio::time::timeout(QUEUE_WAIT, wait).await {
            Ok(Ok(permit)) => Ok(Slot(permit)),
            _ => {
                super::hit(super::Limit::AuthBusy);
                Err(Busy)
            }
        }
    }

    /// Runs `work` with a slot (see [`PasswordGate::slot`]).
    pub async fn run<T, F>(&self, client: IpAddr, work: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.slot(false, client).await?.run(work).await
    }

    /// Hashes a new password for `client`.
    pub async fn hash(
        &self,
        client: IpAddr,
        password: String,
    ) -> Result<Result<String, accounts::AccountError>, Busy> {
        self.run(client, move || accounts::hash_password(&password))
            .await
    }

    /// Open slots free right now.
    pub fn available(&self) -> usize {
        self.open.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[tokio::test]
    async fn over_the_bound_is_busy_at_once() {
        let gate = PasswordGate::new(1, 0);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let held = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.run(ip(1), move || rx.recv().ok()).await })
        };
        while gate.available() > 0 {
            tokio::task::yield_now().await;
        }
        let started = std::time::Instant::now();
        assert_eq!(gate.run(ip(2), || ()).await, Err(Busy));
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        tx.send(()).unwrap();
        assert_eq!(held.await.unwrap(), Ok(Some(())));
        assert_eq!(gate.run(ip(2), || 7).await, Ok(7));
    }

    #[tokio::test]
    async fn a_known_client_gets_the_reserved_slot() {
        let gate = PasswordGate::new(3, 0);
        let _a = gate.slot(false, ip(1)).await.unwrap();
        let _b = gate.slot(false, ip(1)).await.unwrap();
        assert!(
            gate.slot(false, ip(2)).await.is_err(),
            "two open slots of three"
        );
        let known = gate.slot(true, ip(3)).await.expect("the reserved slot");
        assert!(gate.slot(true, ip(3)).await.is_err());
        drop(known);
        assert!(gate.slot(true, ip(3)).await.is_ok());
        let single = PasswordGate::new(1, 0);
        let _c = single.slot(false, ip(1)).await.unwrap();
        assert!(single.slot(true, ip(3)).await.is_err());
    }

    /// Returns once `n` callers wait in the gate's queue (fails after 5 s).
    async fn queued(gate: &PasswordGate, n: usize) {
        let queued = async {
            while gate.waiting.load(Ordering::Acquire) < n {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), queued)
            .await
            .expect("the waiters queued");
    }

    /// Waiters are served in order, the queue is bounded in all and per client, and
    /// every place is given back.
    #[tokio::test]
    async fn a_burst_waits_in_a_bounded_fair_queue() {
        let gate = PasswordGate::new(1, 4);
        let held = gate.slot(false, ip(9)).await.unwrap();
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for (n, client) in [(1, ip(1)), (2, ip(1)), (3, ip(2)), (4, ip(3))] {
            let (g, order_tx) = (gate.clone(), order_tx.clone());
            waiters.push(tokio::spawn(async move {
                let slot = g.slot(false, client).await;
                order_tx.send(n).unwrap();
                slot.is_ok()
            }));
            queued(&gate, n).await;
        }
        assert!(
            gate.slot(false, ip(4)).await.is_err(),
            "the queue is full: busy at once"
        );
        drop(held);
        for w in waiters {
            assert!(w.await.unwrap(), "every waiter got the slot in turn");
        }
        let order: Vec<usize> = std::iter::from_fn(|| order_rx.try_recv().ok()).collect();
        assert_eq!(order, [1, 2, 3, 4], "first come, first served");
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
        assert!(gate.per_client.lock().unwrap().is_empty());

        let gate = PasswordGate::new(1, 4);
        let _held = gate.slot(false, ip(9)).await.unwrap();
        let g = gate.clone();
        let _w1 = tokio::spawn(async move { g.slot(false, ip(1)).await.is_ok() });
        let g = gate.clone();
        let _w2 = tokio::spawn(async move { g.slot(false, ip(1)).await.is_ok() });
        queued(&gate, 2).await;
        assert!(
            gate.slot(false, ip(1)).await.is_err(),
            "one client holds at most half the queue"
        );
    }
}
