//! The dispatcher against a real local HTTP receiver: its breakers on a hand-moved
//! clock, and its connection pool across a policy change.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::hooks::{ManualClock, TestFailure};

fn hook_config(failures: u32, cooldown: f64) -> HookConfig {
    HookConfig {
        id: "h".into(),
        event: HookEvent::PreReceive,
        url: "http://127.0.0.1:9".into(),
        secret: "0123456789abcdef".into(),
        timeout_ms: 100,
        on_timeout: HookFallback::Allow,
        on_error: HookFallback::Allow,
        breaker_failures: failures,
        breaker_cooldown_seconds: cooldown,
        enabled: true,
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that keeps connections alive and answers every
/// request with an empty body and the status in `status` (200 at first).
struct TestReceiver {
    port: u16,
    /// Connections accepted.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests answered.
    requests: Arc<std::sync::atomic::AtomicUsize>,
    status: Arc<std::sync::atomic::AtomicU16>,
}

async fn keep_alive_server() -> TestReceiver {
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = TestReceiver {
        port: listener.local_addr().unwrap().port(),
        accepted: Arc::new(AtomicUsize::new(0)),
        requests: Arc::new(AtomicUsize::new(0)),
        status: Arc::new(AtomicU16::new(200)),
    };
    let (accepted, requests, status) = (
        receiver.accepted.clone(),
        receiver.requests.clone(),
        receiver.status.clone(),
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (requests, status) = (requests.clone(), status.clone());
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: 0\r\n\r\n",
                        status.load(Ordering::SeqCst)
                    );
                    if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    receiver
}

fn allow_loopback() -> TargetPolicy {
    TargetPolicy::from_config(&crate::config::HookPolicyConfig {
        allowed_networks: vec!["127.0.0.0/8".into()],
        ..Default::default()
    })
    .unwrap()
}

/// The breaker on the dispatcher's clock: real calls to a real receiver, the time
/// moved by hand, each transition checked at the instant it is due.
#[tokio::test]
async fn breaker_follows_the_dispatchers_clock() {
    use std::sync::atomic::Ordering;
    let receiver = keep_alive_server().await;
    let requests = || receiver.requests.load(Ordering::SeqCst);
    let mut config = hook_config(3, 30.0);
    config.url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let clock = Arc::new(ManualClock::default());
    let dispatcher =
        HookDispatcher::with_clock(&[config], allow_loopback(), clock.clone()).unwrap();
    let hook = dispatcher.snapshot()[0].clone();
    let state = || dispatcher.list()[0].2;
    let call = || dispatcher.call_uncounted(&hook, b"{}");

    receiver.status.store(500, Ordering::SeqCst);
    for n in 1..=3 {
        assert!(matches!(call().await, Outcome::Failed(_)));
        assert_eq!(requests(), n);
    }
    assert_eq!(
        state(),
        BreakerState::Open {
            retry_in_ms: 30_000
        }
    );
    assert!(matches!(call().await, Outcome::Skipped));
    clock.advance(Duration::from_millis(29_999));
    assert!(matches!(call().await, Outcome::Skipped), "1 ms early");
    assert_eq!(state(), BreakerState::Open { retry_in_ms: 1 });
    assert_eq!(requests(), 3, "not called while open");

    // The trial fails: a whole new cool-down from then.
    clock.advance(Duration::from_millis(1));
    assert!(matches!(call().await, Outcome::Failed(_)), "the trial");
    assert_eq!(requests(), 4);
    assert_eq!(
        state(),
        BreakerState::Open {
            retry_in_ms: 30_000
        }
    );
    assert!(matches!(call().await, Outcome::Skipped));

    // The next trial succeeds and closes it.
    receiver.status.store(200, Ordering::SeqCst);
    clock.advance(Duration::from_secs(30));
    assert!(matches!(call().await, Outcome::Answered(_)));
    assert_eq!(state(), BreakerState::Closed { failures: 0 });
    assert!(matches!(call().await, Outcome::Answered(_)));
    assert_eq!(requests(), 6);

    // Reset by hand closes an open breaker at once.
    receiver.status.store(500, Ordering::SeqCst);
    for _ in 0..3 {
        call().await;
    }
    assert!(matches!(state(), BreakerState::Open { .. }));
    assert!(dispatcher.reset("h"));
    assert_eq!(state(), BreakerState::Closed { failures: 0 });
    assert!(matches!(call().await, Outcome::Failed(_)), "called again");
}

/// Names are checked when a connection is opened and the pool reuses connections:
/// a new policy must come with a new pool, or a hook called often would keep the
/// connection the old policy allowed.
#[tokio::test]
async fn a_new_policy_does_not_reuse_connections_of_the_old_one() {
    use std::sync::atomic::Ordering;
    let receiver = keep_alive_server().await;
    let accepted = &receiver.accepted;
    let mut config = hook_config(5, 30.0);
    config.url = format!("http://localhost:{}/hook", receiver.port);
    let dispatcher = HookDispatcher::new(&[config], allow_loopback()).unwrap();
    for _ in 0..2 {
        let call = dispatcher.test("h").await.unwrap();
        assert_eq!((call.ok, call.status), (true, Some(200)), "{call:?}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the second call reused the pooled connection"
    );

    dispatcher.set_policy(TargetPolicy::default()).unwrap();
    let call = dispatcher.test("h").await.unwrap();
    assert_eq!(
        (call.ok, call.error),
        (false, Some(TestFailure::TargetRefused)),
        "{call:?}"
    );

    dispatcher.set_policy(allow_loopback()).unwrap();
    let call = dispatcher.test("h").await.unwrap();
    assert!(call.ok, "{call:?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a new connection, resolved under the new policy"
    );
}
