//! The HealthMonitor on a real SQLite database and object directory: only its own
//! probes mark a dependency down.

use std::sync::Arc;

use actix::Actor;
use mairust_actors::health::HealthMonitor;
use mairust_actors::health_state::HealthState;
use mairust_actors::storage::BodyStore;

mod common;
use common::config;

/// A failure reported by a caller (a query that timed out waiting for a pool slot)
/// only makes the monitor probe; the database is marked down only by failed probes,
/// `health.failures_before_down` of them in a row.
#[actix_rt::test]
async fn only_failed_probes_mark_a_dependency_down() {
    use mairust_actors::health::ProbeNow;
    use mairust_actors::health_state::{Dependency, DependencyFailed};
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let db = common::database(&config, false).await;
    let bodies = BodyStore::create(&config.storage).unwrap();
    let health = Arc::new(HealthState::default());
    let monitor = HealthMonitor::new(
        health.clone(),
        db.clone(),
        bodies.clone(),
        config.health.clone(),
        "test".into(),
    )
    .start();
    for _ in 0..5 {
        monitor
            .send(DependencyFailed(Dependency::Database))
            .await
            .unwrap();
        assert!(health.accepting_mail(), "one failed call marked it down");
    }
    monitor.send(ProbeNow).await.unwrap();
    assert!(health.accepting_mail());

    // An object store the probe cannot write (its directory replaced by a file): down
    // after the confirming probe, while the database stays up.
    let objects = dir.path().join("objects");
    // Renamed aside in one step: the first monitor's probe may be writing into it.
    std::fs::rename(&objects, dir.path().join("objects.gone")).unwrap();
    std::fs::write(&objects, b"not a directory").unwrap();
    let health = Arc::new(HealthState::default());
    let mut three = config.health.clone();
    three.failures_before_down = 3;
    let monitor =
        HealthMonitor::new(health.clone(), db.clone(), bodies, three, "test".into()).start();
    let began = std::time::Instant::now();
    // A caller's report starts a probe; its failure alone leaves the store up until
    // the confirming probes (each at least 0.5 s later) fail too.
    monitor
        .send(DependencyFailed(Dependency::Storage))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert!(health.accepting_mail(), "one failed probe marked it down");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while health.accepting_mail() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !health.accepting_mail(),
        "a dead store was never marked down"
    );
    assert!(
        began.elapsed() >= std::time::Duration::from_millis(1000),
        "marked down after {:?}: the confirmations did not wait",
        began.elapsed()
    );
    assert!(!health.get(Dependency::Storage).up);
    assert!(health.get(Dependency::Database).up);
}
