//! The SMTP sessions open on this node: the listeners admit a new one only within the
//! caps of SPEC M2 (in total and per client address), and the ShutdownCoordinator waits
//! until none is left. Each session holds a [`SessionGuard`]; dropping it is the
//! session's deregistration, so a session that ends in any way is never counted on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Counts open sessions in total and per client address (IPv6 per network of
/// `smtp.limits.ipv6_prefix_length`, see [`crate::net::client_key`]). The
/// ShutdownCoordinator waits on it: every session holds a [`SessionGuard`] whose drop
/// is its deregistration.
pub struct SessionRegistry {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    ipv6_prefix: u8,
    total: AtomicUsize,
    max_total: AtomicUsize,
    max_per_ip: AtomicUsize,
    idle: Notify,
}

pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    ip: IpAddr,
}

impl SessionRegistry {
    pub fn new(max_total: usize, max_per_ip: usize, ipv6_prefix: u8) -> Arc<Self> {
        Arc::new(SessionRegistry {
            per_ip: Mutex::new(HashMap::new()),
            ipv6_prefix,
            total: AtomicUsize::new(0),
            max_total: AtomicUsize::new(max_total),
            max_per_ip: AtomicUsize::new(max_per_ip),
            idle: Notify::new(),
        })
    }

    /// New limits for new sessions (configuration reload); open sessions stay.
    pub fn set_limits(&self, max_total: usize, max_per_ip: usize) {
        self.max_total.store(max_total, Ordering::Release);
        self.max_per_ip.store(max_per_ip, Ordering::Release);
    }

    pub fn active(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// A place for a new session, or `None` when a limit is reached.
    pub fn try_register(self: &Arc<Self>, ip: IpAddr) -> Option<SessionGuard> {
        let ip = crate::net::client_key(ip, self.ipv6_prefix);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip.load(Ordering::Acquire)
            || self.total.load(Ordering::Acquire) >= self.max_total.load(Ordering::Acquire)
        {
            if *count == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Some(SessionGuard {
            registry: self.clone(),
            ip,
        })
    }

    /// Resolves when no session is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut per_ip = self
            .registry
            .per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        drop(per_ip);
        if self.registry.total.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_prefix_against_the_per_address_limit() {
        let registry = SessionRegistry::new(100, 2, 64);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = registry.try_register(ip("2001:db8:1:2::1")).unwrap();
        let _b = registry.try_register(ip("2001:db8:1:2:ffff::2")).unwrap();
        assert!(
            registry.try_register(ip("2001:db8:1:2:abcd::3")).is_none(),
            "a third address of the same /64"
        );
        let _c = registry.try_register(ip("2001:db8:1:3::1")).unwrap();
        drop(a);
        let d = registry.try_register(ip("2001:db8:1:2::9"));
        assert!(d.is_some());
        assert_eq!(registry.active(), 3);
    }
}
