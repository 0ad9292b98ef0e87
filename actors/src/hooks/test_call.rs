//! `POST /hooks/{id}/test`: an enabled hook called with a made-up message, outside its
//! breaker, reporting only whether and how fast it answered.

use std::time::Instant;

use serde::Serialize;

use super::dispatcher::HookDispatcher;
use super::egress::CallError;
use super::wire::test_request_body;

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

impl HookDispatcher {
    /// Calls an enabled hook with a made-up message, bypassing and not touching its
    /// breaker. Only the status and latency are kept: the answer's body is not read.
    pub async fn test(&self, id: &str) -> Result<TestCall, NotTestable> {
        let hooks = self.snapshot();
        let hook = hooks
            .iter()
            .find(|h| h.config.id == id)
            .ok_or(NotTestable::NoSuchHook)?;
        if !hook.config.enabled {
            return Err(NotTestable::Disabled);
        }
        let body = test_request_body(&hook.config.id, hook.config.event);
        let started = Instant::now();
        let result = self.egress().send(&hook.config, body).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let failed = |error| TestCall {
            ok: false,
            status: None,
            latency_ms,
            error: Some(error),
        };
        Ok(match result {
            Ok(resp) => TestCall {
                ok: resp.status().is_success(),
                status: Some(resp.status().as_u16()),
                latency_ms,
                error: None,
            },
            Err(CallError::Refused(refused)) => {
                hook.log_refusal(&refused);
                failed(TestFailure::TargetRefused)
            }
            Err(CallError::TimedOut) => failed(TestFailure::Timeout),
            Err(CallError::Failed(e)) => {
                tracing::info!(component = "hook", hook = %hook.config.id, event = "hook_test_failed", error = %e, "hook test call failed");
                failed(TestFailure::Unreachable)
            }
        })
    }
}
