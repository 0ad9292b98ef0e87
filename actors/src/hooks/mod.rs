//! HTTP hooks (SPEC M9): other programs take part in mail processing.
//!
//! - `pre_receive`: after DATA, before 250; the answer may allow, reject (550 5.7.1),
//!   tempfail (451 4.7.1) or add tags to the message.
//! - `post_receive`: after the message is stored; not awaited.
//! - `pre_send`: before a message with remote recipients is queued; allow, reject or
//!   tempfail.
//!
//! Requests are JSON POSTs signed with `X-MaiRust-Timestamp` and `X-MaiRust-Signature:
//! sha256=HMAC(secret, timestamp + "\n" + hook_id + "\n" + hex(sha256(body)))`. Each
//! hook has its timeout and `on_timeout` / `on_error` fallbacks, and a circuit breaker:
//! after `breaker_failures` consecutive failures it opens and the hook is skipped (its
//! `on_error` fallback applies at once, so SMTP stays fast); after the cool-down one
//! trial call is let through (half-open), and success closes it again ([`breaker`]:
//! the state machine, told the time by the dispatcher's [`Clock`]).
//!
//! Every call obeys `hook_policy` ([`target`]): only allowed addresses are connected
//! to, redirects are not followed (a 3xx answer is an error: the message and its
//! signature go to the configured URL and nowhere else), and an answer is read up to
//! `max_response_bytes`. A refused target is a hook error like any other (on_error,
//! breaker, `result="error"`), logged as `hook_target_refused`. A new policy (reload)
//! comes with a new HTTP client, so no pooled connection outlives the policy it was
//! opened under.
//!
//! Layout:
//! - `dispatcher` — [`HookDispatcher`]: the hook set, which hooks run for an event,
//!   their fallbacks, post_receive spawning, metrics
//! - `hook` — one hook as the dispatcher holds it: configuration, source, breaker
//! - [`breaker`] — the circuit breaker's state machine and the [`Clock`] it goes by
//! - `egress` — the HTTP client of one `hook_policy`: signed POSTs, capped answers
//! - `target` — `hook_policy`: which addresses hooks may connect to
//! - `address_range` — the kinds of non-public address (IANA special-purpose blocks)
//! - `signature` — the HMAC signature of a request
//! - `wire` — what a hook is sent and what it answers (JSON)
//! - `store` — API-defined hooks loaded from the database
//! - `test_call` — `POST /hooks/{id}/test`: a call with a made-up message

mod address_range;
pub mod breaker;
mod dispatcher;
mod egress;
mod hook;
mod signature;
mod store;
mod target;
mod test_call;
mod wire;

pub use address_range::{AddressRange, classify};
pub use breaker::{BreakerState, Clock, ManualClock, SystemClock};
pub use dispatcher::HookDispatcher;
pub use hook::HookSource;
pub use signature::signature;
pub use store::config_of;
pub use target::{TargetPolicy, TargetRefused};
pub use test_call::{NotTestable, TestCall, TestFailure};

/// What the hooks decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow { tags: Vec<String> },
    Reject(String),
    Tempfail(String),
}
