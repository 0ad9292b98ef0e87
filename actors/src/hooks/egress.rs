//! The HTTP client hooks are called through: one per `hook_policy`, sending signed
//! POSTs to allowed targets only, following no redirect and reading answers up to
//! `max_response_bytes`.

use std::sync::Arc;
use std::time::Duration;

use super::signature::signature;
use super::target::{GuardedResolver, TargetPolicy, TargetRefused, refusal_in};
use super::wire::Answer;
use crate::config::HookConfig;

/// Why a request got no (usable) answer.
pub(super) enum CallError {
    Refused(TargetRefused),
    TimedOut,
    Failed(String),
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

/// A `hook_policy` and the HTTP client that obeys it, replaced together. The client
/// keeps connections alive in its pool and reuses one without a new lookup, so names are
/// checked only when a connection is opened: a client kept across a reload would let a
/// hook called often keep a connection the new policy refuses, for as long as it is
/// called. A new policy therefore gets a new client, and no connection opened under the
/// old one serves a later call.
pub(super) struct Egress {
    pub(super) policy: Arc<TargetPolicy>,
    /// Resolves names through [`GuardedResolver`] with `policy`, follows no redirect and
    /// uses no proxy (a proxy would resolve the target itself, out of the policy's sight).
    client: reqwest::Client,
}

impl Egress {
    pub(super) fn new(policy: TargetPolicy) -> Result<Egress, reqwest::Error> {
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
    pub(super) async fn send(
        &self,
        hook: &HookConfig,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, CallError> {
        let url = reqwest::Url::parse(&hook.url)
            .map_err(|e| CallError::Failed(format!("invalid URL: {e}")))?;
        self.policy.check_url(&url).map_err(CallError::Refused)?;
        let timestamp = chrono::Utc::now().timestamp();
        let request = self
            .client
            .post(url)
            .timeout(Duration::from_millis(hook.timeout_ms))
            .header("Content-Type", "application/json")
            .header("X-MaiRust-Hook", &hook.id)
            .header("X-MaiRust-Timestamp", timestamp.to_string())
            .header(
                "X-MaiRust-Signature",
                signature(&hook.secret, timestamp, &hook.id, &body),
            )
            .body(body);
        Ok(request.send().await?)
    }

    /// [`Egress::send`], then the answer: a 2xx status (redirects are not followed, so a
    /// 3xx is an error too) and a body within `max_response_bytes` that reads as an
    /// [`Answer`].
    pub(super) async fn call(&self, hook: &HookConfig, body: Vec<u8>) -> Result<Answer, CallError> {
        let resp = self.send(hook, body).await?;
        if !resp.status().is_success() {
            return Err(CallError::Failed(format!("answered {}", resp.status())));
        }
        let bytes = read_capped(resp, self.policy.max_response_bytes).await?;
        Answer::parse(&bytes).map_err(|e| CallError::Failed(format!("unreadable answer: {e}")))
    }
}
