//! What goes over the wire to a hook: the JSON request describing a message, and the
//! JSON answer (action, message, tags) it sends back.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::HookEvent;
use crate::storage::IncomingMessage;

/// A hook's answer (2xx with this JSON; an empty body means allow).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Answer {
    #[serde(default)]
    action: Option<String>,
    /// The text of a reject or tempfail, given to the client.
    #[serde(default)]
    pub(super) message: Option<String>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
}

/// What an answer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Allow,
    Reject,
    Tempfail,
}

impl Answer {
    /// Reads an answer's body: blank is an allow without tags, anything else must be
    /// the JSON object.
    pub(super) fn parse(body: &[u8]) -> Result<Answer, serde_json::Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            Ok(Answer::default())
        } else {
            serde_json::from_slice(body)
        }
    }

    /// The action asked for (none means allow); `Err` with an action this server does
    /// not know, which its hook's `on_error` then decides.
    pub(super) fn action(&self) -> Result<Action, &str> {
        match self.action.as_deref() {
            None | Some("allow") => Ok(Action::Allow),
            Some("reject") => Ok(Action::Reject),
            Some("tempfail") => Ok(Action::Tempfail),
            Some(other) => Err(other),
        }
    }
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

/// The request body telling hook `hook_id` about `message` for `event`, with the raw
/// message when `with_raw`.
pub(super) fn request_body(
    hook_id: &str,
    event: HookEvent,
    message: &IncomingMessage,
    with_raw: bool,
) -> Vec<u8> {
    serde_json::to_vec(&Request {
        hook_id,
        event,
        message: describe(message, with_raw),
    })
    .unwrap_or_default()
}

/// The request body of a test call: a made-up message, marked `"test": true`.
pub(super) fn test_request_body(hook_id: &str, event: HookEvent) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "hook_id": hook_id,
        "event": event,
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
    .unwrap_or_default()
}
