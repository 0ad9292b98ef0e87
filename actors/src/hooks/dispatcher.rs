//! [`HookDispatcher`]: the hooks in force (config.yaml's and the API's), which of them
//! run for an event and in what order, the fallbacks when one does not answer, the
//! breaker around every call, and the metrics of each call.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use tracing::Instrument;

use super::Verdict;
use super::breaker::{BreakerState, Clock, SystemClock};
use super::egress::{CallError, Egress};
use super::hook::{Hook, HookSource};
use super::target::{TargetPolicy, TargetRefused};
use super::test_call::{NotTestable, TestCall, TestFailure};
use super::wire::{Action, Answer, request_body, test_request_body};
use crate::config::{HookConfig, HookEvent, HookFallback};
use crate::storage::IncomingMessage;
use crate::storage::envelope::valid_tag;

/// How one call went.
pub(super) enum Outcome {
    Answered(Answer),
    TimedOut,
    Failed(String),
    /// `hook_policy` does not allow the target's address: not connected to.
    Refused(TargetRefused),
    /// The breaker is open: not called.
    Skipped,
}

impl From<CallError> for Outcome {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Refused(r) => Outcome::Refused(r),
            CallError::TimedOut => Outcome::TimedOut,
            CallError::Failed(e) => Outcome::Failed(e),
        }
    }
}

/// Calls the configured hooks. Shared by every SMTP session and the API. The set can
/// change at run time (hooks created through the API): callers work on a snapshot.
pub struct HookDispatcher {
    /// `hook_policy` and its client; replaced on reload. A call takes one snapshot and
    /// uses it throughout, so its checks and its connection follow the same policy.
    egress: RwLock<Arc<Egress>>,
    /// config.yaml's hooks (replaced on reload) and the API's (from the database).
    sources: RwLock<(Vec<HookConfig>, Vec<HookConfig>)>,
    hooks: RwLock<Arc<Vec<Arc<Hook>>>>,
    /// The time the breakers go by: the system's, or a test's
    /// [`ManualClock`](super::ManualClock).
    clock: Arc<dyn Clock>,
}

impl HookDispatcher {
    pub fn new(configs: &[HookConfig], policy: TargetPolicy) -> Result<Self, reqwest::Error> {
        Self::with_clock(configs, policy, Arc::new(SystemClock))
    }

    /// A dispatcher whose breakers go by `clock`.
    pub fn with_clock(
        configs: &[HookConfig],
        policy: TargetPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        let dispatcher = HookDispatcher {
            egress: RwLock::new(Arc::new(Egress::new(policy)?)),
            sources: RwLock::new((configs.to_vec(), Vec::new())),
            hooks: RwLock::new(Arc::new(Vec::new())),
            clock,
        };
        dispatcher.rebuild();
        Ok(dispatcher)
    }

    /// Replaces `hook_policy` (configuration reload) and the client with it: calls under
    /// way finish on the old client, whose pooled connections close when they are done;
    /// every later call opens a new connection, its name resolved under the new policy.
    /// On error (the client could not be built) the old policy stays.
    pub fn set_policy(&self, policy: TargetPolicy) -> Result<(), reqwest::Error> {
        let egress = Arc::new(Egress::new(policy)?);
        *self.egress.write().unwrap_or_else(|e| e.into_inner()) = egress;
        Ok(())
    }

    pub(super) fn egress(&self) -> Arc<Egress> {
        self.egress
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the policy refuses `url` before any lookup: its host is an IP literal that is
    /// not allowed. Names are checked when they are resolved, at each connection.
    pub fn refused_literal(&self, url: &str) -> Option<TargetRefused> {
        let url = reqwest::Url::parse(url).ok()?;
        self.egress().policy.check_url(&url).err()
    }

    /// Replaces config.yaml's hooks (configuration reload).
    pub fn set_config_hooks(&self, configs: &[HookConfig]) {
        self.sources.write().unwrap_or_else(|e| e.into_inner()).0 = configs.to_vec();
        self.rebuild();
    }

    pub(super) fn snapshot(&self) -> Arc<Vec<Arc<Hook>>> {
        self.hooks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the API-defined hooks.
    pub fn set_api_hooks(&self, api: Vec<HookConfig>) {
        self.sources.write().unwrap_or_else(|e| e.into_inner()).1 = api;
        self.rebuild();
    }

    /// The hook set from both sources: config.yaml's first, winning on an id clash. A
    /// hook that keeps its id keeps its breaker.
    fn rebuild(&self) {
        // Exclusive: rebuilds run one at a time, each from the latest sources.
        let sources = self.sources.write().unwrap_or_else(|e| e.into_inner());
        let (from_config, api) = &*sources;
        let old = self.snapshot();
        let now = self.clock.now();
        let carried = |id: &str| {
            old.iter()
                .find(|h| h.config.id == id)
                .map(|h| h.carried_breaker(now))
                .unwrap_or_default()
        };
        let mut hooks: Vec<Arc<Hook>> = Vec::new();
        let configured = from_config.iter().map(|c| (c, HookSource::Config));
        let added = api.iter().map(|c| (c, HookSource::Api));
        for (config, source) in configured.chain(added) {
            if hooks.iter().any(|h| h.config.id == config.id) {
                continue;
            }
            hooks.push(Arc::new(Hook::new(
                config.clone(),
                source,
                carried(&config.id),
            )));
        }
        let m = crate::metrics::metrics();
        for gone in old
            .iter()
            .filter(|o| !hooks.iter().any(|h| h.config.id == o.config.id))
        {
            m.hook_removed(&gone.config.id);
        }
        for hook in &hooks {
            m.hook_known(&hook.config.id);
        }
        *self.hooks.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(hooks);
    }

    /// Whether `id` is defined in config.yaml (and so not editable through the API).
    pub fn is_configured(&self, id: &str) -> bool {
        let sources = self.sources.read().unwrap_or_else(|e| e.into_inner());
        sources.0.iter().any(|c| c.id == id)
    }

    pub fn has(&self, event: HookEvent) -> bool {
        self.snapshot()
            .iter()
            .any(|h| h.config.enabled && h.config.event == event)
    }

    /// Every hook with where it is defined and its breaker.
    pub fn list(&self) -> Vec<(HookConfig, HookSource, BreakerState)> {
        self.snapshot()
            .iter()
            .map(|h| (h.config.clone(), h.source, h.state(self.clock.now())))
            .collect()
    }

    /// Closes a hook's breaker by hand; false when there is no such hook.
    pub fn reset(&self, id: &str) -> bool {
        match self.snapshot().iter().find(|h| h.config.id == id) {
            Some(h) => {
                h.record(true, self.clock.now());
                true
            }
            None => false,
        }
    }

    async fn call(&self, hook: &Hook, body: &[u8]) -> Outcome {
        let outcome = self.call_uncounted(hook, body).await;
        let m = crate::metrics::metrics();
        let result = match &outcome {
            Outcome::Answered(a) => match a.action() {
                Ok(Action::Allow) => "allow",
                Ok(Action::Reject) => "reject",
                Ok(Action::Tempfail) => "tempfail",
                Err(_) => "invalid",
            },
            Outcome::TimedOut => "timeout",
            Outcome::Failed(_) | Outcome::Refused(_) => "error",
            Outcome::Skipped => "skipped",
        };
        if let Outcome::Refused(refused) = &outcome {
            hook.log_refusal(refused);
        }
        m.hook_calls
            .with_label_values(&[hook.config.id.as_str(), result])
            .inc();
        if matches!(result, "timeout" | "error" | "invalid") {
            m.plugin_errors
                .with_label_values(&[hook.config.id.as_str()])
                .inc();
        }
        outcome
    }

    /// One call, its breaker consulted and updated.
    async fn call_uncounted(&self, hook: &Hook, body: &[u8]) -> Outcome {
        if !hook.admit(self.clock.now()) {
            return Outcome::Skipped;
        }
        let outcome = match self.egress().call(&hook.config, body.to_vec()).await {
            Ok(answer) => Outcome::Answered(answer),
            Err(e) => e.into(),
        };
        hook.record(matches!(outcome, Outcome::Answered(_)), self.clock.now());
        outcome
    }

    /// Runs the hooks of `event` in order; the first reject or tempfail wins, tags add
    /// up.
    async fn decide(&self, event: HookEvent, message: &IncomingMessage) -> Verdict {
        let mut tags = Vec::new();
        let hooks = self.snapshot();
        for hook in hooks
            .iter()
            .filter(|h| h.config.enabled && h.config.event == event)
        {
            let body = request_body(&hook.config.id, event, message, true);
            let started = Instant::now();
            let span = crate::trace::child_span(
                || tracing::info_span!("hook.call", hook = %hook.config.id, event = ?event),
            );
            let outcome = self.call(hook, &body).instrument(span).await;
            let verdict = match outcome {
                Outcome::Answered(mut answer) => {
                    tags.extend(answer.tags.drain(..).filter(|t| valid_tag(t)));
                    let text = answer.message.take().unwrap_or_default();
                    match answer.action() {
                        Ok(Action::Allow) => None,
                        Ok(Action::Reject) => Some(Verdict::Reject(text)),
                        Ok(Action::Tempfail) => Some(Verdict::Tempfail(text)),
                        Err(other) => {
                            tracing::warn!(component = "hook", hook = %hook.config.id, event = "hook_unknown_action", action = other, "unknown action, applying on_error");
                            fallback(hook.config.on_error, "unknown action")
                        }
                    }
                }
                Outcome::TimedOut => {
                    tracing::warn!(component = "hook", hook = %hook.config.id, event = "hook_timeout", ms = started.elapsed().as_millis() as u64, "hook timed out");
                    fallback(hook.config.on_timeout, "timeout")
                }
                Outcome::Failed(e) => {
                    tracing::warn!(component = "hook", hook = %hook.config.id, event = "hook_error", error = %e, "hook failed");
                    fallback(hook.config.on_error, "error")
                }
                // Logged by `call` as hook_target_refused.
                Outcome::Refused(_) => fallback(hook.config.on_error, "error"),
                Outcome::Skipped => fallback(hook.config.on_error, "circuit open"),
            };
            if let Some(v) = verdict {
                tracing::info!(component = "hook", hook = %hook.config.id, id = %message.id, verdict = ?v, "hook verdict");
                return v;
            }
        }
        Verdict::Allow { tags }
    }

    pub async fn pre_receive(&self, message: &IncomingMessage) -> Verdict {
        self.decide(HookEvent::PreReceive, message).await
    }

    pub async fn pre_send(&self, message: &IncomingMessage) -> Verdict {
        self.decide(HookEvent::PreSend, message).await
    }

    /// Tells the post_receive hooks, without waiting for them.
    pub fn post_receive(self: &Arc<Self>, message: &IncomingMessage) {
        for hook in self.snapshot().iter() {
            if !hook.config.enabled || hook.config.event != HookEvent::PostReceive {
                continue;
            }
            let body = request_body(&hook.config.id, HookEvent::PostReceive, message, false);
            let (me, hook) = (self.clone(), hook.clone());
            // Its own trace, linked to the transaction's (when that is traced): it must
            // not keep that open.
            let span = crate::trace::child_span(|| {
                let span = tracing::info_span!(parent: None, "hook.call", sampling.priority = 1, hook = %hook.config.id, event = "post_receive");
                span.follows_from(tracing::Span::current().id());
                span
            });
            let task = async move {
                match me.call(&hook, &body).await {
                    Outcome::Failed(e) => {
                        tracing::warn!(component = "hook", hook = %hook.config.id, event = "hook_error", error = %e, "post_receive hook failed")
                    }
                    Outcome::TimedOut => {
                        tracing::warn!(component = "hook", hook = %hook.config.id, event = "hook_timeout", "post_receive hook timed out")
                    }
                    _ => {}
                }
            };
            tokio::spawn(task.instrument(span));
        }
    }
}

/// What a hook's fallback (`on_timeout`, `on_error`) makes of a call that gave no
/// usable answer for reason `why`: `None` lets the next hook decide.
fn fallback(which: HookFallback, why: &str) -> Option<Verdict> {
    match which {
        HookFallback::Allow => None,
        HookFallback::Reject => Some(Verdict::Reject(format!("rejected by policy ({why})"))),
        HookFallback::Tempfail => Some(Verdict::Tempfail(format!(
            "policy check unavailable ({why}), try again later"
        ))),
    }
}

/// `POST /hooks/{id}/test`.
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

#[cfg(test)]
mod tests;
