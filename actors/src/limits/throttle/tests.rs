//! Unit tests of [`super::AuthThrottle`]: backoff, lockouts, audit summaries, bounds.

use super::*;

fn throttle(max_address: u32, max_account: u32) -> AuthThrottle {
    AuthThrottle::new(&AuthConfig {
        max_concurrent_verifications: 1,
        max_queued_verifications: 0,
        max_failures_per_address: max_address,
        max_failures_per_account: max_account,
        failure_window_seconds: 60,
        lockout_seconds: 120,
        failure_delay_ms: 100,
        max_failure_delay_ms: 1000,
        audit_summary_seconds: 60,
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What an admission refuses for, if it does.
fn locked_out(admission: Admission) -> Option<LockedOut> {
    match admission {
        Admission::Locked { what, .. } => Some(what),
        Admission::Allowed => None,
    }
}

#[test]
fn address_backs_off_then_is_locked_out_then_released() {
    let t = throttle(5, 1000);
    let now = Instant::now();
    let a = ip("192.0.2.1");
    let delays: Vec<u128> = (0..4)
        .map(|i| t.failed_at(a, &format!("u{i}@x"), now).delay.as_millis())
        .collect();
    assert_eq!(delays, [100, 200, 400, 800]);
    assert_eq!(t.admit_at(a, "v@x", now), Admission::Allowed);
    let fifth = t.failed_at(a, "u5@x", now);
    assert!(fifth.locked_address && !fifth.locked_account);
    assert_eq!(
        locked_out(t.admit_at(a, "v@x", now + Duration::from_secs(119))),
        Some(LockedOut::Address)
    );
    // Another address is not affected.
    assert_eq!(t.admit_at(ip("192.0.2.2"), "v@x", now), Admission::Allowed);
    assert_eq!(
        t.admit_at(a, "v@x", now + Duration::from_secs(121)),
        Admission::Allowed
    );
}

#[test]
fn failures_outside_the_window_are_forgotten() {
    let t = throttle(3, 1000);
    let now = Instant::now();
    let a = ip("192.0.2.1");
    t.failed_at(a, "u@x", now);
    t.failed_at(a, "u@x", now);
    let later = now + Duration::from_secs(61);
    let f = t.failed_at(a, "u@x", later);
    assert!(!f.locked_address);
    assert_eq!(f.delay, Duration::from_millis(100));
}

#[test]
fn account_lockout_spares_addresses_that_logged_in_before() {
    let t = throttle(1000, 3);
    let now = Instant::now();
    let owner = ip("198.51.100.7");
    t.succeeded(owner, "Bob@Example.test");
    for i in 0..3 {
        t.failed_at(ip(&format!("192.0.2.{i}")), "bob@example.test", now);
    }
    assert_eq!(
        locked_out(t.admit_at(ip("192.0.2.99"), "BOB@example.test", now)),
        Some(LockedOut::Account)
    );
    assert_eq!(
        t.admit_at(owner, "bob@example.test", Instant::now()),
        Admission::Allowed
    );
}

#[test]
fn first_failure_is_audited_the_rest_summarised() {
    let t = throttle(1000, 1000);
    let now = Instant::now();
    let a = ip("192.0.2.1");
    assert!(t.failed_at(a, "a@x", now).audit_now);
    for i in 0..9 {
        assert!(!t.failed_at(a, &format!("b{i}@x"), now).audit_now);
    }
    let summaries = t.take_summaries();
    assert_eq!(summaries.len(), 1);
    let (addr, s) = &summaries[0];
    assert_eq!((*addr, s.failures), (a, 9));
    assert_eq!(s.accounts.len(), SUMMARY_ACCOUNTS);
    assert!(t.take_summaries().is_empty());
    assert!(t.failed_at(a, "c@x", now).audit_now, "a new period");
}

#[test]
fn maps_stay_bounded_under_address_spraying() {
    let t = throttle(1000, 1000);
    let now = Instant::now();
    let mut audited = 0;
    for i in 0..(MAX_TRACKED as u32 + 500) {
        let a = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
        audited += usize::from(t.failed_at(a, &format!("user{i}@x"), now).audit_now);
    }
    assert_eq!(
        audited, MAX_AUDITED_PER_PERIOD,
        "one entry each for the first only"
    );
    let state = t.state();
    assert!(state.addresses.len() <= MAX_TRACKED);
    assert!(state.accounts.len() <= MAX_TRACKED);
    assert!(state.unreported.len() <= MAX_TRACKED);
}
