//! Failed-AUTH throttling across connections: per client address (see
//! [`crate::net::client_key`]) and per account. Each failure delays its answer a little
//! more (backoff); enough failures in `auth.failure_window_seconds` lock the address,
//! or the account, out for `auth.lockout_seconds`, during which AUTH gets 454 4.7.0
//! without a password check. An account lockout spares addresses that logged into it successfully
//! within [`KNOWN_FOR`] (known clients, who also get the password gate's reserved
//! slot), so a guesser cannot lock the owner out.
//!
//! The audit trail is kept but bounded: the first failure of an address in a summary
//! period is audited on its own (at most [`MAX_AUDITED_PER_PERIOD`] such entries per
//! period), and the rest are counted into one summary entry per address and period
//! ([`AuthThrottle::take_summaries`]), so a flood of guesses cannot become a flood of
//! database writes ([`spawn_summaries`] writes those). All maps are bounded
//! ([`MAX_TRACKED`]).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;

mod summaries;
#[cfg(test)]
mod tests;

pub use summaries::spawn_summaries;

/// Entries kept per map. Past it, expired entries are dropped first, then entries that
/// lock nothing out.
pub const MAX_TRACKED: usize = 100_000;
/// Accounts named in one summary entry.
const SUMMARY_ACCOUNTS: usize = 5;
/// Longest account name kept as a key (the client chooses it).
const MAX_ACCOUNT_KEY: usize = 320;
/// How long an address that logged into an account stays known for it.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 86_400);

/// Whether an AUTH attempt may be checked at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Locked out: answer 454 4.7.0 without checking.
    Locked {
        what: LockedOut,
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockedOut {
    Address,
    Account,
}

/// What a failure led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Wait this long before answering 535.
    pub delay: Duration,
    /// The first failure of this address in the current summary period: audit it on
    /// its own (the others go into the summary).
    pub audit_now: bool,
    /// This failure locked the address and/or the account out.
    pub locked_address: bool,
    pub locked_account: bool,
}

/// Failures of one address in one summary period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    pub failures: u32,
    /// Attempts refused during a lockout (no password check).
    pub refused: u32,
    /// Attempts refused because no password-check slot was free.
    pub busy: u32,
    /// Some of the account names tried (at most [`SUMMARY_ACCOUNTS`]).
    pub accounts: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

impl Record {
    fn new(now: Instant) -> Self {
        Record {
            failures: 0,
            window_start: now,
            locked_until: None,
        }
    }

    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn expired(&self, now: Instant, window: Duration) -> bool {
        now.duration_since(self.window_start) >= window && self.locked(now).is_none()
    }

    /// Counts one failure; true when it reaches `max` and starts a lockout.
    fn fail(&mut self, now: Instant, window: Duration, max: u32, lockout: Duration) -> bool {
        if now.duration_since(self.window_start) >= window {
            *self = Record::new(now);
        }
        self.failures += 1;
        if self.failures >= max && self.locked(now).is_none() {
            self.locked_until = Some(now + lockout);
            // The count starts over once the lockout ends.
            self.failures = 0;
            self.window_start = now + lockout;
            return true;
        }
        false
    }
}

#[derive(Default)]
struct State {
    addresses: HashMap<IpAddr, Record>,
    /// By [`AccountKey`]: a fixed-size key whatever name the client sends.
    accounts: HashMap<AccountKey, Record>,
    /// (account, address) → last successful login.
    trusted: HashMap<(AccountKey, IpAddr), Instant>,
    /// Failures audited one by one in this summary period (at most
    /// [`MAX_AUDITED_PER_PERIOD`], whatever the number of addresses).
    audited: usize,
    /// Failures since the last summary, per address.
    unreported: HashMap<IpAddr, Summary>,
}

pub struct AuthThrottle {
    config: Mutex<Settings>,
    state: Mutex<State>,
    /// The key of [`AccountKey`] hashes, random per process.
    hasher: std::hash::RandomState,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    window: Duration,
    lockout: Duration,
    max_per_address: u32,
    max_per_account: u32,
    delay: Duration,
    max_delay: Duration,
}

impl From<&AuthConfig> for Settings {
    fn from(c: &AuthConfig) -> Self {
        Settings {
            window: Duration::from_secs(c.failure_window_seconds),
            lockout: Duration::from_secs(c.lockout_seconds),
            max_per_address: c.max_failures_per_address,
            max_per_account: c.max_failures_per_account,
            delay: Duration::from_millis(c.failure_delay_ms),
            max_delay: Duration::from_millis(c.max_failure_delay_ms),
        }
    }
}

/// An account name as counted: a keyed 64-bit hash of its lowercase form, so memory per
/// entry is fixed whatever the client sends (collisions need the process's random key).
type AccountKey = u64;

/// The account name as shown in summaries: lowercase, at most [`MAX_ACCOUNT_KEY`] bytes.
fn account_name(account: &str) -> String {
    let mut end = account.len().min(MAX_ACCOUNT_KEY);
    while !account.is_char_boundary(end) {
        end -= 1;
    }
    account[..end].to_lowercase()
}

/// Drops what matters least once a map is full: expired records, then the oldest tenth
/// of those that lock nothing out (a sprayer resets only the oldest counters).
fn bound<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Record>,
    now: Instant,
    window: Duration,
) {
    if map.len() < MAX_TRACKED {
        return;
    }
    map.retain(|_, r| !r.expired(now, window));
    if map.len() >= MAX_TRACKED {
        let mut unlocked: Vec<(Instant, K)> = map
            .iter()
            .filter(|(_, r)| r.locked(now).is_none())
            .map(|(k, r)| (r.window_start, k.clone()))
            .collect();
        unlocked.sort_unstable_by_key(|(at, _)| *at);
        for (_, key) in unlocked.into_iter().take(MAX_TRACKED / 10) {
            map.remove(&key);
        }
    }
}

/// Failures audited one by one per summary period, over all addresses (IPv6 spraying
/// makes every guess some address's first).
pub const MAX_AUDITED_PER_PERIOD: usize = 100;

impl AuthThrottle {
    pub fn new(config: &AuthConfig) -> Self {
        AuthThrottle {
            config: Mutex::new(config.into()),
            state: Mutex::new(State::default()),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// New settings (configuration reload); what was counted stays.
    pub fn set_config(&self, config: &AuthConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config.into();
    }

    fn settings(&self) -> Settings {
        *self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, account: &str) -> AccountKey {
        use std::hash::BuildHasher;
        self.hasher.hash_one(account.to_lowercase())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May `address` try a password for `account` now?
    pub fn admit(&self, address: IpAddr, account: &str) -> Admission {
        self.admit_at(address, account, Instant::now())
    }

    fn admit_at(&self, address: IpAddr, account: &str, now: Instant) -> Admission {
        let account = self.key(account);
        let mut state = self.state();
        let locked = if let Some(left) = state.addresses.get(&address).and_then(|r| r.locked(now)) {
            Some((LockedOut::Address, left))
        } else {
            let trusted = state
                .trusted
                .get(&(account, address))
                .is_some_and(|at| now.duration_since(*at) < KNOWN_FOR);
            state
                .accounts
                .get(&account)
                .and_then(|r| r.locked(now))
                .filter(|_| !trusted)
                .map(|left| (LockedOut::Account, left))
        };
        match locked {
            Some((what, retry_after)) => {
                if state.unreported.len() < MAX_TRACKED || state.unreported.contains_key(&address) {
                    state.unreported.entry(address).or_default().refused += 1;
                }
                Admission::Locked { what, retry_after }
            }
            None => Admission::Allowed,
        }
    }

    /// Counts a failed attempt of `address` for `account`.
    pub fn failed(&self, address: IpAddr, account: &str) -> Failure {
        self.failed_at(address, account, Instant::now())
    }

    fn failed_at(&self, address: IpAddr, account: &str, now: Instant) -> Failure {
        let s = self.settings();
        let (key, name) = (self.key(account), account_name(account));
        let mut state = self.state();
        bound(&mut state.addresses, now, s.window);
        bound(&mut state.accounts, now, s.window);
        let address_record = state
            .addresses
            .entry(address)
            .or_insert_with(|| Record::new(now));
        let locked_address = address_record.fail(now, s.window, s.max_per_address, s.lockout);
        let failures = address_record.failures.max(1);
        let locked_account = state
            .accounts
            .entry(key)
            .or_insert_with(|| Record::new(now))
            .fail(now, s.window, s.max_per_account, s.lockout);
        let tracked = state.unreported.len();
        let audit_now = match state.unreported.get_mut(&address) {
            Some(summary) => {
                summary.failures += 1;
                if summary.accounts.len() < SUMMARY_ACCOUNTS {
                    summary.accounts.insert(name);
                }
                false
            }
            // The address's first failure this period: its own entry, while fewer than
            // MAX_AUDITED_PER_PERIOD were; otherwise the first of its summary.
            None if tracked < MAX_TRACKED => {
                let own = state.audited < MAX_AUDITED_PER_PERIOD;
                let mut summary = Summary::default();
                if own {
                    state.audited += 1;
                } else {
                    summary.failures = 1;
                    summary.accounts.insert(name);
                }
                state.unreported.insert(address, summary);
                own
            }
            // Too many distinct addresses this period: counted in metrics and logs only.
            None => false,
        };
        let doublings = failures.saturating_sub(1).min(16);
        let delay = s.delay.saturating_mul(1u32 << doublings).min(s.max_delay);
        Failure {
            delay,
            audit_now,
            locked_address,
            locked_account,
        }
    }

    /// Whether `address` logged into `account` within [`KNOWN_FOR`].
    pub fn known(&self, address: IpAddr, account: &str) -> bool {
        self.state()
            .trusted
            .get(&(self.key(account), address))
            .is_some_and(|at| at.elapsed() < KNOWN_FOR)
    }

    /// An attempt that was not checked — no password-check slot free, or the check
    /// could not run (database lookup failed): counted in the summary as `busy`.
    pub fn busy(&self, address: IpAddr) {
        let mut state = self.state();
        if state.unreported.len() < MAX_TRACKED || state.unreported.contains_key(&address) {
            state.unreported.entry(address).or_default().busy += 1;
        }
    }

    /// A successful login: the address may use the account even while the account is
    /// locked out by guessers elsewhere.
    pub fn succeeded(&self, address: IpAddr, account: &str) {
        let now = Instant::now();
        let mut state = self.state();
        if state.trusted.len() >= MAX_TRACKED {
            state
                .trusted
                .retain(|_, at| now.duration_since(*at) < KNOWN_FOR);
            if state.trusted.len() >= MAX_TRACKED {
                // The oldest tenth goes; recent known clients stay known.
                let mut by_age: Vec<(Instant, (AccountKey, IpAddr))> =
                    state.trusted.iter().map(|(k, at)| (*at, *k)).collect();
                by_age.sort_unstable_by_key(|(at, _)| *at);
                for (_, key) in by_age.into_iter().take(MAX_TRACKED / 10) {
                    state.trusted.remove(&key);
                }
            }
        }
        let key = self.key(account);
        state.trusted.insert((key, address), now);
    }

    /// Summaries of the failures after each address's first, since the last call, for
    /// the periodic audit entry; addresses with nothing more to report are left out.
    pub fn take_summaries(&self) -> Vec<(IpAddr, Summary)> {
        let mut state = self.state();
        state.audited = 0;
        std::mem::take(&mut state.unreported)
            .into_iter()
            .filter(|(_, s)| s.failures > 0 || s.refused > 0 || s.busy > 0)
            .collect()
    }
}
