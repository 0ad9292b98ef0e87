//! `POST /api/v1/send`: a message built with mail-builder from JSON, then stored and
//! routed like a submission: local recipients get it in their INBOX, the others through
//! the outbound queue (SPEC A1, M6). 202 only once it is durable.
//!
//! The sender is an existing user (SPEC S5): the message records that account
//! (`messages.submitted_by`, our Received header) and the audit log records which key
//! sent it; no key identifier goes into the message, which may leave the server. The
//! message passes the hooks an SMTP submission passes: pre_receive for local
//! recipients, pre_send for remote ones, post_receive once stored. What cannot be
//! written safely as it is — a bare CR in the body, an address that could be split or
//! end early in a header or SMTP command — is refused with 422.

use std::collections::HashSet;

use actix_web::{HttpResponse, post, web};
use mail_builder::MessageBuilder;
use mairust_actors::accounts::{self, LocalRecipient, RecipientLookup};
use mairust_actors::apikeys::Scope;
use mairust_actors::config::HookEvent;
use mairust_actors::hooks::Verdict;
use mairust_actors::proto::command::Address;
use mairust_actors::storage::{IncomingMessage, StoreMessage};
use mairust_actors::submission::{self, Submitter};
use mairust_actors::supervisor::Handles;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody, ErrorCode};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Sender address: an existing, enabled user of this server (envelope sender and
    /// From:), of a domain the key may use (for a key limited to some domains). The
    /// message is recorded as submitted by that user.
    pub from: String,
    /// Display name for From.
    pub from_name: Option<String>,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// Envelope recipients not shown in the headers.
    #[serde(default)]
    pub bcc: Vec<String>,
    pub subject: String,
    /// Plain-text body; `text` or `html` (or both) is required. Lines end with LF or
    /// CRLF; a CR not followed by LF is refused.
    pub text: Option<String>,
    /// HTML body; a CR not followed by LF is refused.
    pub html: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SendResponse {
    /// The stored message's id (and queue id when queued).
    pub id: String,
    /// The Message-ID header given to the message.
    pub message_id: String,
    /// Recipients delivered to local mailboxes.
    pub delivered: Vec<String>,
    /// Recipients in the outbound queue.
    pub queued: Vec<String>,
}

/// An address of the request, refused unless it can be written as it is into the
/// headers and the SMTP envelope ([`Address::is_header_safe`]).
fn parse(field: &str, address: &str) -> Result<Address, ApiError> {
    let parsed = Address::parse(address.trim())
        .ok_or_else(|| ApiError::field(field, format!("`{address}` is not an address")))?;
    if !parsed.is_header_safe() {
        return Err(ApiError::field(
            field,
            format!(
                "`{}` cannot be sent safely: the local part may hold letters, digits, dots and !#$%&'*+-/=?^_`{{|}}~ (and spaces when quoted), the domain letters, digits, `-` and dots; no `>`, `,`, quotes inside quotes, backslashes or control characters",
                address.escape_debug()
            ),
        ));
    }
    Ok(parsed)
}

/// A CR not followed by LF: mail-builder keeps it as it is, and readers disagree on
/// whether it ends a line (the SMTP listener refuses it too).
fn has_bare_cr(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
}

/// The account that sends: the user of `from`, existing and enabled.
async fn sender_account(handles: &Handles, from: &Address) -> Result<Submitter, ApiError> {
    if accounts::find_domain(&handles.db, &from.domain)
        .await?
        .is_none()
    {
        return Err(ApiError::field(
            "from",
            format!("{} is not one of this server's domains", from.domain),
        ));
    }
    match submission::owner_of(&handles.db, from).await? {
        Some((submitter, false)) => Ok(submitter),
        Some((_, true)) => Err(ApiError::field(
            "from",
            format!("user {} is disabled and cannot send", from.key()),
        )),
        None => Err(ApiError::field(
            "from",
            format!(
                "no user {}: the sender must be an existing user of this server",
                from.key()
            ),
        )),
    }
}

/// Send a message.
#[utoipa::path(
    tag = "send",
    request_body = SendRequest,
    responses(
        (status = 202, description = "Stored: delivered locally and/or queued", body = SendResponse),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 422, description = "Invalid or unsafe address, sender not an existing enabled user, unknown local recipient, no body, a bare CR in the body, or refused by a pre_receive/pre_send hook", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["send"]))
)]
#[post("/send")]
pub async fn send(
    auth: Authenticated,
    handles: web::Data<Handles>,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Send)?;
    if handles.health.storage_full() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the message store is full (storage.limit_bytes); try again later",
        ));
    }
    let body = body.into_inner();
    let from = parse("from", &body.from)?;
    if !auth.may_use(&from.domain) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this API key may not send from {}: it is limited to other domains",
                from.domain
            ),
        ));
    }
    if body.to.is_empty() && body.cc.is_empty() && body.bcc.is_empty() {
        return Err(ApiError::field("to", "at least one recipient is needed"));
    }
    if body.text.is_none() && body.html.is_none() {
        return Err(ApiError::field("text", "text or html is needed"));
    }
    for (field, text) in [("text", &body.text), ("html", &body.html)] {
        if text.as_deref().is_some_and(has_bare_cr) {
            return Err(ApiError::field(
                field,
                "contains a bare CR (a CR not followed by LF); end lines with LF or CRLF",
            ));
        }
    }
    // Counted before any lookup (duplicates included, as over SMTP), so a request with
    // thousands of recipients costs nothing but this check.
    let limit = handles.config.smtp.limits.max_recipients;
    if body.to.len() + body.cc.len() + body.bcc.len() > limit {
        return Err(ApiError::field(
            "to",
            format!("more than {limit} recipients (smtp.limits.max_recipients)"),
        ));
    }
    let submitter = sender_account(&handles, &from).await?;
    let mut local: Vec<LocalRecipient> = Vec::new();
    let mut remote: Vec<Address> = Vec::new();
    let mut seen_local = HashSet::new();
    let mut seen_remote = HashSet::new();
    for (field, list) in [("to", &body.to), ("cc", &body.cc), ("bcc", &body.bcc)] {
        for a in list {
            let address = parse(field, a)?;
            match accounts::lookup_recipient(&handles.db, &address).await? {
                RecipientLookup::Local(r) => {
                    if seen_local.insert(r.user_id) {
                        local.push(r);
                    }
                }
                RecipientLookup::Remote => {
                    if seen_remote.insert(address.key()) {
                        remote.push(address);
                    }
                }
                RecipientLookup::UnknownUser => {
                    return Err(ApiError::field(field, format!("no local user {a}")));
                }
            }
        }
    }

    let id = uuid::Uuid::now_v7().to_string();
    let hostname = &handles.config.server.hostname;
    let message_id = format!("{id}@{hostname}");
    let sender = from.to_string();
    let mut builder = MessageBuilder::new()
        .from(match &body.from_name {
            Some(name) => mail_builder::headers::address::Address::new_address(
                Some(name.as_str()),
                sender.as_str(),
            ),
            None => {
                mail_builder::headers::address::Address::new_address(None::<&str>, sender.as_str())
            }
        })
        .subject(body.subject.as_str())
        .message_id(message_id.as_str())
        .date(chrono::Utc::now().timestamp());
    if !body.to.is_empty() {
        builder = builder.to(body.to.iter().map(|a| a.trim()).collect::<Vec<_>>());
    }
    if !body.cc.is_empty() {
        builder = builder.cc(body.cc.iter().map(|a| a.trim()).collect::<Vec<_>>());
    }
    if let Some(text) = &body.text {
        builder = builder.text_body(text.as_str());
    }
    if let Some(html) = &body.html {
        builder = builder.html_body(html.as_str());
    }
    // The client (behind a trusted proxy, the one it forwarded for), not the proxy.
    let remote_ip = auth.remote;
    // The sending account in a comment, as for SMTP AUTH; the key stays out of it.
    let received = format!(
        "Received: from api ([{remote_ip}]) (API submission for {account})\r\n\tby {hostname} (MaiRust) with HTTP id {id};\r\n\t{}\r\n",
        chrono::Utc::now().to_rfc2822(),
        account = submission::comment_text(submitter.account()),
    );
    let raw = builder
        .write_to_vec()
        .map_err(|e| ApiError::new(ErrorCode::InternalError, e.to_string()))?;
    if raw.len() > handles.config.smtp.limits.max_message_size {
        return Err(ApiError::field(
            "text",
            "the message is larger than smtp.limits.max_message_size",
        ));
    }
    let mut stored = received.into_bytes();
    stored.extend_from_slice(&raw);
    let delivered: Vec<String> = local.iter().map(|l| l.address.clone()).collect();
    let queued: Vec<String> = remote.iter().map(|a| a.to_string()).collect();
    let mut message =
        IncomingMessage::new(id.clone(), stored, sender, local, "api", remote_ip, remote);
    message.submitted_by = Some(submitter.account().to_string());
    screen(&handles, &mut message).await?;
    let hooks = &handles.hooks;
    let told = (!message.recipients.is_empty() && hooks.has(HookEvent::PostReceive))
        .then(|| message.clone());
    match handles.storage.send(StoreMessage::new(message)).await {
        Ok(Ok(())) => {
            if let Some(stored) = told {
                hooks.post_receive(&stored);
            }
            tracing::info!(component = "api", event = "message_sent", id = %id, key = auth.caller.key_id, submitted_by = submitter.account(), delivered = delivered.len(), queued = queued.len(), "message accepted through the API");
            handles.audit.spawn(
                auth.did("message.send")
                    .target(&id)
                    .detail("submitted_by", submitter.account())
                    .detail("delivered", delivered.len())
                    .detail("queued", queued.len()),
            );
            Ok(HttpResponse::Accepted().json(SendResponse {
                id,
                message_id,
                delivered,
                queued,
            }))
        }
        Ok(Err(e)) => {
            tracing::warn!(component = "api", error = %e, "message not stored");
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "the message could not be stored now; try again shortly",
            ))
        }
        Err(e) => {
            tracing::error!(component = "api", error = %e, "storage actor unreachable");
            Err(ApiError::new(ErrorCode::Unavailable, "storage unavailable"))
        }
    }
}

/// The hooks an SMTP submission passes before it is stored: pre_receive when the
/// message has local recipients, pre_send when it has remote ones.
async fn screen(handles: &Handles, message: &mut IncomingMessage) -> Result<(), ApiError> {
    let hooks = &handles.hooks;
    if !message.recipients.is_empty() && hooks.has(HookEvent::PreReceive) {
        let verdict = hooks.pre_receive(message).await;
        follow(verdict, "pre_receive", message)?;
    }
    if !message.outbound.is_empty() && hooks.has(HookEvent::PreSend) {
        let verdict = hooks.pre_send(message).await;
        follow(verdict, "pre_send", message)?;
    }
    Ok(())
}

/// A hook's answer: its tags go on the mailbox entries (as over SMTP); a refusal is
/// 422 and a deferral 503.
fn follow(verdict: Verdict, hook: &str, message: &mut IncomingMessage) -> Result<(), ApiError> {
    match verdict {
        Verdict::Allow { tags } => {
            message.tags.extend(tags);
            Ok(())
        }
        Verdict::Reject(text) => {
            tracing::info!(component = "api", event = "message_rejected_by_hook", id = %message.id, hook, "message refused by a hook");
            Err(ApiError::field(
                "to",
                format!("refused by a {hook} hook: {text}"),
            ))
        }
        Verdict::Tempfail(text) => Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("deferred by a {hook} hook, try again later: {text}"),
        )),
    }
}
