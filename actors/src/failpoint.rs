//! Failpoints: places where a test makes a child of the actor tree fail on purpose
//! (panic, or return an error where the place can), to see the Supervisor restart it.
//! They exist only in builds with the `failpoints` feature (the integration tests'
//! build); elsewhere [`failpoint!`] expands to nothing and `FAILPOINTS` is ignored.
//!
//! The server reads `FAILPOINTS` at start ([`from_env`]), in the `fail` crate's syntax:
//! `FAILPOINTS="queue_worker_loop=1*panic;smtp_accept=1*off->1*return(broken)"`.
//!
//! | name | where | `return(text)` |
//! | --- | --- | --- |
//! | `queue_worker_loop` | top of each QueueWorker loop turn | (panics) |
//! | `smtp_accept` | the accept loop, after a connection is accepted | the loop ends with `text` |
//! | `storage_batch` | the StorageActor, as an object batch starts | the actor stops |
//! | `sqlite_writer` | SQLite's row writer thread, before a COMMIT | (panics; the actor fails with it) |
//! | `health_probe` | each HealthMonitor probe | (panics) |
//! | `janitor_run` | the Janitor, as it starts | (panics) |

/// A failpoint: `fail::fail_point!` with the `failpoints` feature, nothing without it.
#[cfg(feature = "failpoints")]
macro_rules! failpoint {
    ($($args:tt)*) => { fail::fail_point!($($args)*) };
}

/// A failpoint: `fail::fail_point!` with the `failpoints` feature, nothing without it.
#[cfg(not(feature = "failpoints"))]
macro_rules! failpoint {
    ($($args:tt)*) => {};
}

pub(crate) use failpoint;

/// The failpoints configured from `FAILPOINTS`; they stay armed while this lives.
pub struct Scenario {
    #[cfg(feature = "failpoints")]
    _scenario: fail::FailScenario<'static>,
}

/// Arms the failpoints named in `FAILPOINTS` (a build without the feature ignores the
/// variable, and says so when it is set). Keep the result for the life of the server.
pub fn from_env() -> Scenario {
    let configured = std::env::var_os("FAILPOINTS").is_some_and(|v| !v.is_empty());
    #[cfg(feature = "failpoints")]
    {
        if configured {
            tracing::warn!(
                component = "supervisor",
                event = "failpoints_armed",
                failpoints = %std::env::var("FAILPOINTS").unwrap_or_default(),
                "FAILPOINTS set: children of the actor tree will fail on purpose"
            );
        }
        Scenario {
            _scenario: fail::FailScenario::setup(),
        }
    }
    #[cfg(not(feature = "failpoints"))]
    {
        if configured {
            tracing::warn!(
                component = "supervisor",
                event = "failpoints_ignored",
                "FAILPOINTS set, but this build has no failpoints (feature `failpoints`)"
            );
        }
        Scenario {}
    }
}
