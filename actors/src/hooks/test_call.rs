//! What `POST /hooks/{id}/test` reports: whether and how fast an enabled hook answered
//! a made-up message, called outside its breaker (`HookDispatcher::test`).

use serde::Serialize;

/// What a test call found: whether and how fast the target answered, never what it
/// said. Its body and headers stay out, so a test call cannot be used to read the
/// answer of a service the server can reach and the caller cannot.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TestCall {
    /// The hook answered 2xx.
    pub ok: bool,
    /// The answer's HTTP status (a 3xx is not followed); absent when there was none.
    pub status: Option<u16>,
    /// From sending the request to the answer's status line.
    pub latency_ms: u64,
    /// Why there was no answer; absent when there was one.
    pub error: Option<TestFailure>,
}

/// Why a test call got no answer (the server log has the details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestFailure {
    /// The target's address is not allowed by `hook_policy` (logged as
    /// `hook_target_refused`).
    TargetRefused,
    /// No answer within the hook's `timeout_ms`.
    Timeout,
    /// DNS, connection, TLS or HTTP failure.
    Unreachable,
}

/// Why a hook cannot be test-called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTestable {
    NoSuchHook,
    /// A disabled hook is not called, not even for a test.
    Disabled,
}
