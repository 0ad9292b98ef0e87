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

pub mod breaker;
mod target;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use breaker::{Breaker, Thresholds, Transition};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::config::{HookConfig, HookEvent, HookFallback};
use crate::storage::IncomingMessage;
use crate::storage::envelope::{hex, valid_tag};

pub use breaker::{BreakerState, Clock, ManualClock, SystemClock};
pub use target::{AddressRange, TargetPolicy, TargetRefused, classify};
use target::{GuardedResolver, refusal_in};

/// The signature header value for a request body.
pub fn signature(secret: &str, timestamp: i64, hook_id: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}\n{hook_id}\n{}", hex(&Sha256::digest(body))).as_bytes());
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// What the hooks decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow { tags: Vec<String> },
    Reject(String),
    Tempfail(String),
}

/// A hook's answer (2xx with this JSON; an empty body means allow).
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// What a hook is told about the message.
#[derive(Debug, Serialize)]
struct Request<'a> {
    hook_id: &'a str,
    event: HookEvent,
    message: MessageInfo<'a>,
}

#[derive(Debug, Serialize)]
struct MessageInfo<'a> {
    id: &'a str,
    envelope_from: &'a str,
    recipients: Vec<String>,
    size: usize,
    subject: Option<&'a str>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    message_id: Option<&'a str>,
    listener: &'a str,
    remote_ip: String,
    /// The account that submitted it (SMTP AUTH, `POST /send`); null for mail from
    /// other servers.
    submitted_by: Option<&'a str>,
    /// The whole message, base64 (not for post_receive: fetch it through the API).
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
}

fn describe(m: &IncomingMessage, with_raw: bool) -> MessageInfo<'_> {
    MessageInfo {
        id: &m.id,
        envelope_from: &m.envelope_from,
        recipients: m
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .chain(m.outbound.iter().map(|a| a.to_string()))
            .collect(),
        size: m.body.len(),
        subject: m.meta.subject.as_deref(),
        from: m.meta.from.as_deref(),
        to: m.meta.to.as_deref(),
        message_id: m.meta.message_id.as_deref(),
        listener: m.listener,
        remote_ip: m.remote_ip.to_string(),
        submitted_by: m.submitted_by.as_deref(),
        raw: with_raw.then(|| base64::engine::general_purpose::STANDARD.encode(&m.body)),
    }
}

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

/// Where a hook is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HookSource {
    /// config.yaml: read-only through the API.
    Config,
    /// Created through the API, stored in the database.
    Api,
}

struct Hook {
    config: HookConfig,
    source: HookSource,
    breaker: Mutex<Breaker>,
}

/// How one call went.
enum Outcome {
    Answered(Answer),
    TimedOut,
    Failed(String),
    /// `hook_policy` does not allow the target's address: not connected to.
    Refused(TargetRefused),
    /// The breaker is open: not called.
    Skipped,
}

/// Why a request got no (usable) answer.
enum CallError {
    Refused(TargetRefused),
    TimedOut,
    Failed(String),
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

impl From<reqwest::Error> for CallError {
    fn from(e: reqwest::Error) -> Self {
        if let Some(refused) = refusal_in(&e) {
            CallError::Refused(refused)
        } else if e.is_timeout() {
            CallError::TimedOut
        } else {
            CallError::Failed(error_chain(&e))
        }
    }
}

/// An error with its causes (reqwest's own text alone rarely says what went wrong).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Reads an answer's body, at most `limit` bytes: past that it is an error. The
/// length the target announces is not trusted, the bytes are counted.
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, CallError> {
    let too_long = || {
        CallError::Failed(format!(
            "answer longer than {limit} bytes (hook_policy.max_response_bytes)"
        ))
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_long());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Hook {
    fn thresholds(&self) -> Thresholds {
        Thresholds {
            failures: self.config.breaker_failures,
            cooldown: Duration::from_secs_f64(self.config.breaker_cooldown_seconds),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether to call at `now`; moves an open breaker past its cool-down to half-open.
    fn admit(&self, now: Instant) -> bool {
        let (admitted, transition) = self.breaker().admit(now, self.thresholds());
        self.log(transition);
        admitted
    }

    /// Records how an admitted call ended, at `now`.
    fn record(&self, ok: bool, now: Instant) {
        let transition = self.breaker().record(ok, now, self.thresholds());
        self.log(transition);
    }

    fn state(&self, now: Instant) -> BreakerState {
        self.breaker().state(now, self.thresholds())
    }

    fn log(&self, transition: Option<Transition>) {
        match transition {
            None => {}
            Some(Transition::HalfOpened) => {
                tracing::info!(component = "hook", hook = %self.config.id, event = "breaker_half_open", "circuit breaker half-open: one trial call");
            }
            Some(Transition::Closed) => {
                tracing::info!(component = "hook", hook = %self.config.id, event = "breaker_closed", "circuit breaker closed");
            }
            Some(Transition::Opened) => {
                tracing::warn!(component = "hook", hook = %self.config.id, event = "breaker_open", cooldown_seconds = self.config.breaker_cooldown_seconds, "circuit breaker open: hook skipped until the cool-down ends");
            }
        }
    }
}

/// A `hook_policy` and the HTTP client that obeys it, replaced together. The client
/// keeps connections alive in its pool and reuses one without a new lookup, so names are
/// checked only when a connection is opened: a client kept across a reload would let a
/// hook called often keep a connection the new policy refuses, for as long as it is
/// called. A new policy therefore gets a new client, and no connection opened under the
/// old one serves a later call.
struct Egress {
    policy: Arc<TargetPolicy>,
    /// Resolves names through [`GuardedResolver`] with `policy`, follows no redirect and
    /// uses no proxy (a proxy would resolve the target itself, out of the policy's sight).
    client: reqwest::Client,
}

impl Egress {
    fn new(policy: TargetPolicy) -> Result<Egress, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver {
                policy: policy.clone(),
            })
            .build()?;
        Ok(Egress { policy, client })
    }

    /// POSTs `body` to the hook, signed, with the hook's timeout, if the policy allows
    /// its target: an IP literal is checked here, a name by the resolver.
    async fn send(&self, hook: &Hook, body: Vec<u8>) -> Result<reqwest::Response, CallError> {
        let url = reqwest::Url::parse(&hook.config.url)
            .map_err(|e| CallError::Failed(format!("invalid URL: {e}")))?;
        self.policy.check_url(&url).map_err(CallError::Refused)?;
        let timestamp = chrono::Utc::now().timestamp();
        let request = self
            .client
            .post(url)
            .timeout(Duration::from_millis(hook.config.timeout_ms))
            .header("Content-Type", "application/json")
            .header("X-MaiRust-Hook", &hook.config.id)
            .header("X-MaiRust-Timestamp", timestamp.to_string())
            .header(
                "X-MaiRust-Signature",
                signature(&hook.config.secret, timestamp, &hook.config.id, &body),
            )
            .body(body);
        Ok(request.send().await?)
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
    /// The time the breakers go by: the system's, or a test's [`ManualClock`].
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

    fn egress(&self) -> Arc<Egress> {
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

    fn snapshot(&self) -> Arc<Vec<Arc<Hook>>> {
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
                .map(|h| h.breaker().carried(now))
                .unwrap_or_default()
        };
        let mut hooks: Vec<Arc<Hook>> = Vec::new();
        let configured = from_config.iter().map(|c| (c, HookSource::Config));
        let added = api.iter().map(|c| (c, HookSource::Api));
        for (config, source) in configured.chain(added) {
            if hooks.iter().any(|h| h.config.id == config.id) {
                continue;
            }
            hooks.push(Arc::new(Hook {
                breaker: Mutex::new(carried(&config.id)),
                config: config.clone(),
                source,
            }));
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
        let body = serde_json::to_vec(&serde_json::json!({
            "hook_id": hook.config.id,
            "event": hook.config.event,
            "test": true,
            "message": {
                "id": "00000000-0000-0000-0000-000000000000",
                "envelope_from": "test@example.invalid",
                "recipients": ["test@example.invalid"],
                "size": 0,
                "subject": "MaiRust hook test",
                "listener": "test",
                "remote_ip": "127.0.0.1"
            }
        }))
        .unwrap_or_default();
        let started = Instant::now();
        let result = self.egress().send(hook, body).await;
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
                log_refusal(hook, &refused);
                failed(TestFailure::TargetRefused)
            }
            Err(CallError::TimedOut) => failed(TestFailure::Timeout),
            Err(CallError::Failed(e)) => {
                tracing::info!(component = "hook", hook = %hook.config.id, event = "hook_test_failed", error = %e, "hook test call failed");
                failed(TestFailure::Unreachable)
            }
        })
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
            Outcome::Answered(a) => match a.action.as_deref() {
                None | Some("allow") => "allow",
                Some("reject") => "reject",
                Some("tempfail") => "tempfail",
                Some(_) => "invalid",
            },
            Outcome::TimedOut => "timeout",
            Outcome::Failed(_) | Outcome::Refused(_) => "error",
            Outcome::Skipped => "skipped",
        };
        if let Outcome::Refused(refused) = &outcome {
            log_refusal(hook, refused);
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
        let egress = self.egress();
        let limit = egress.policy.max_response_bytes;
        let outcome = match egress.send(hook, body.to_vec()).await {
            Err(e) => e.into(),
            // Redirects are not followed: a 3xx lands here too.
            Ok(resp) if !resp.status().is_success() => {
                Outcome::Failed(format!("answered {}", resp.status()))
            }
            Ok(resp) => match read_capped(resp, limit).await {
                Err(e) => e.into(),
                Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
                    Outcome::Answered(Answer::default())
                }
                Ok(bytes) => match serde_json::from_slice::<Answer>(&bytes) {
                    Ok(answer) => Outcome::Answered(answer),
                    Err(e) => Outcome::Failed(format!("unreadable answer: {e}")),
                },
            },
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
            let body = serde_json::to_vec(&Request {
                hook_id: &hook.config.id,
                event,
                message: describe(message, true),
            })
            .unwrap_or_default();
            let started = Instant::now();
            let span = crate::trace::child_span(
                || tracing::info_span!("hook.call", hook = %hook.config.id, event = ?event),
            );
            let outcome = self.call(hook, &body).instrument(span).await;
            let fallback = |which: HookFallback, why: &str| match which {
                HookFallback::Allow => None,
                HookFallback::Reject => {
                    Some(Verdict::Reject(format!("rejected by policy ({why})")))
                }
                HookFallback::Tempfail => Some(Verdict::Tempfail(format!(
                    "policy check unavailable ({why}), try again later"
                ))),
            };
            let verdict = match outcome {
                Outcome::Answered(answer) => {
                    tags.extend(answer.tags.into_iter().filter(|t| valid_tag(t)));
                    let text = answer.message.unwrap_or_default();
                    match answer.action.as_deref() {
                        None | Some("allow") => None,
                        Some("reject") => Some(Verdict::Reject(text)),
                        Some("tempfail") => Some(Verdict::Tempfail(text)),
                        Some(other) => {
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
            let body = serde_json::to_vec(&Request {
                hook_id: &hook.config.id,
                event: HookEvent::PostReceive,
                message: describe(message, false),
            })
            .unwrap_or_default();
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

    /// Loads the API-defined hooks from the database (at start, after an API change,
    /// and periodically so every node sees other nodes' changes).
    pub async fn refresh(&self, db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
        use sea_orm::{EntityTrait, QueryOrder};
        let rows = mairust_entities::hook::Entity::find()
            .order_by_asc(mairust_entities::hook::Column::CreatedAt)
            .all(db)
            .await?;
        self.set_api_hooks(rows.into_iter().filter_map(config_of).collect());
        Ok(())
    }
}

/// The warning an operator alerts on when a hook's target is refused.
fn log_refusal(hook: &Hook, refused: &TargetRefused) {
    tracing::warn!(component = "hook", hook = %hook.config.id, event = "hook_target_refused", host = %refused.host, address = %refused.address, range = refused.range.name(), "hook not called: its target address is not in hook_policy.allowed_networks");
}

/// A stored hook as a [`HookConfig`]; rows that no longer parse are skipped (logged).
pub fn config_of(row: mairust_entities::hook::Model) -> Option<HookConfig> {
    let parse = |s: &str| serde_json::Value::String(s.to_string());
    let config = (|| {
        Some(HookConfig {
            event: serde_json::from_value(parse(&row.event)).ok()?,
            on_timeout: serde_json::from_value(parse(&row.on_timeout)).ok()?,
            on_error: serde_json::from_value(parse(&row.on_error)).ok()?,
            timeout_ms: u64::try_from(row.timeout_ms).ok()?,
            breaker_failures: u32::try_from(row.breaker_failures).ok()?,
            breaker_cooldown_seconds: row.breaker_cooldown_seconds,
            enabled: row.enabled,
            url: row.url.clone(),
            secret: row.secret.clone(),
            id: row.id.clone(),
        })
    })();
    if config.is_none() {
        tracing::warn!(component = "hook", hook = %row.id, event = "hook_unreadable", "stored hook unreadable, ignored");
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(failures: u32, cooldown: f64) -> Hook {
        Hook {
            config: HookConfig {
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
            },
            source: HookSource::Config,
            breaker: Mutex::new(Breaker::default()),
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
        let mut config = hook(3, 30.0).config;
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
        let mut config = hook(5, 30.0).config;
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

    #[test]
    fn signature_covers_timestamp_hook_and_body() {
        let a = signature("0123456789abcdef", 1_700_000_000, "h", b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature("0123456789abcdef", 1_700_000_001, "h", b"{}"));
        assert_ne!(a, signature("0123456789abcdef", 1_700_000_000, "g", b"{}"));
        assert_ne!(a, signature("0123456789abcdef", 1_700_000_000, "h", b"{ }"));
        assert_ne!(a, signature("fedcba9876543210", 1_700_000_000, "h", b"{}"));
    }
}
