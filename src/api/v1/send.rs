//! `POST /api/v1/send`: a message built with mail-builder from JSON, then handed to the
//! same submission pipeline as SMTP (`mairust_actors::submission`): local recipients
//! get it in their INBOX, the others through the outbound queue (SPEC A1, M6). 202 only
//! once it is durable.
//!
//! The sender is an existing user (SPEC S5): the message records that account
//! (`messages.submitted_by`, our Received header) and the audit log records which key
//! sent it; no key identifier goes into the message, which may leave the server. The
//! pipeline applies the SMTP rules: the recipient policy and limit, the From: check
//! (a display name that is a foreign address is refused), the pre_receive and
//! pre_send hooks, post_receive once stored. What cannot be written safely as it is —
//! a bare CR in the body, an address that could be split or end early in a header or
//! SMTP command — is refused with 422.

use actix_web::{HttpResponse, post, web};
use mail_builder::MessageBuilder;
use mairust_actors::apikeys::Scope;
use mairust_actors::proto::command::Address;
use mairust_actors::submission::{Origin, Recipients, Submission, SubmitError, Via};
use mairust_actors::supervisor::Handles;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody, ErrorCode};

/// How long a request waits for room in the memory budget for finished bodies before
/// it is answered 503.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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

/// Send a message.
#[utoipa::path(
    tag = "send",
    request_body = SendRequest,
    responses(
        (status = 202, description = "Stored: delivered locally and/or queued", body = SendResponse),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 422, description = "Refused for good (`details` names the request's field where one is at fault): an invalid or unsafe address; no recipient, or more than smtp.limits.max_recipients; no text or html, or a bare CR in it; a message over smtp.limits.max_message_size; a sender that is not an existing, enabled user of a local domain; an unknown local recipient; a display name that is an address the sender may not use; a message to more recipients than the sender's hourly send limit (send_limits) allows at all; refused by a pre_receive or pre_send hook; or refused by rspamd (action `reject` or `discard`, or, with spam.rspamd.scan_outbound, spam to a remote recipient)", body = ErrorBody),
        AuthErrors,
        // After AuthErrors, whose 429 and 503 these replace (the last one given wins)
        // with every reason this route has.
        (status = 429, description = "Too many failed authentications from this address, or the sender's account or its domain has sent its hourly allowance of messages or recipients (send_limits, per UTC hour): try again after the hour", body = ErrorBody),
        (status = 500, description = "Internal error (logged); nothing was stored", body = ErrorBody),
        (status = 503, description = "Not stored now, try again later: the database or another dependency is down, the store is full (storage.limit_bytes), the send counters are unavailable, a pre_receive or pre_send hook deferred it, rspamd asked to try later (`soft reject`, `greylist`) or could not scan it with spam.rspamd.on_error: tempfail, the message could not be DKIM-signed (this node's dkim.master_key_file is missing or another node's), it could not be stored, or the server had no memory budget for it within 10 s", body = ErrorBody)
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
    let pipeline = &handles.pipeline;
    pipeline.accepting().map_err(|e| refused("from", e))?;
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
    pipeline
        .check_recipient_count(body.to.len() + body.cc.len() + body.bcc.len())
        .map_err(|e| refused("to", e))?;
    let submitter = pipeline
        .sender_account(&from)
        .await
        .map_err(|e| refused("from", e))?;
    let mut recipients = Recipients::default();
    for (field, list) in [("to", &body.to), ("cc", &body.cc), ("bcc", &body.bcc)] {
        for a in list {
            let address = parse(field, a)?;
            pipeline
                .add_recipient(&mut recipients, address, true)
                .await
                .map_err(|e| refused(field, e))?;
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
    let raw = builder
        .write_to_vec()
        .map_err(|e| ApiError::new(ErrorCode::InternalError, e.to_string()))?;
    pipeline
        .check_size(raw.len() as u64)
        .map_err(|e| refused("text", e))?;
    // The client (behind a trusted proxy, the one it forwarded for), not the proxy.
    let remote = auth.remote;
    // The sending account in a comment, as for SMTP AUTH; the key stays out of it.
    let origin = Origin {
        via: Via::Api,
        remote,
        account: Some(submitter.account()),
    };
    let received = pipeline.received_header(origin, &id, &recipients);
    let mut stored = received.into_bytes();
    stored.extend_from_slice(&raw);
    // The body and the copies hooks hold count in the node's memory budget for
    // finished bodies, as a message over SMTP does, until it is stored.
    let copies = pipeline.copies_while_screened(!recipients.outbound.is_empty());
    let Some(_reservation) = handles
        .limits
        .data
        .reserve_body(stored.len(), copies, BUDGET_WAIT)
        .await
    else {
        tracing::warn!(
            component = "api",
            event = "data_memory_exhausted",
            key = auth.caller.key_id,
            size = stored.len(),
            "no memory budget for the message (smtp.limits.max_inflight_data_bytes); 503"
        );
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the server is busy with other messages; try again shortly",
        ));
    };
    let delivered: Vec<String> = recipients.local.iter().map(|l| l.address.clone()).collect();
    let queued: Vec<String> = recipients.outbound.iter().map(|a| a.to_string()).collect();
    let submission = Submission {
        id: id.clone(),
        body: stored,
        sender: Some(&from),
        recipients,
        listener: "api",
        remote,
        helo: None,
        submitter: Some(&submitter),
    };
    pipeline.submit(submission).await.map_err(|e| {
        noted(&handles, &auth, submitter.account(), &id, &e);
        refused("from_name", e)
    })?;
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

/// Logs (under `api`) and audits what the pipeline refused at the end: a From: the
/// account may not use (`submission.sender_refused`, as over SMTP) and hook verdicts.
fn noted(handles: &Handles, auth: &Authenticated, account: &str, id: &str, error: &SubmitError) {
    let key = auth.caller.key_id;
    match error {
        SubmitError::Sender(refusal) => {
            tracing::info!(component = "api", event = "sender_refused", key, user = %account, reason = refusal.reason(), address = refusal.address(), "sender refused for the sending account");
            handles.audit.spawn(
                auth.was_refused("submission.sender_refused")
                    .detail("submitted_by", account)
                    .detail("reason", refusal.reason())
                    .detail("address", refusal.address()),
            );
        }
        SubmitError::Rejected { hook, .. } => {
            tracing::info!(
                component = "api",
                event = "message_rejected_by_hook",
                id,
                key,
                hook,
                "message refused by a hook"
            );
        }
        SubmitError::Deferred { hook, .. } => {
            tracing::info!(
                component = "api",
                event = "message_tempfailed_by_hook",
                id,
                key,
                hook,
                "message deferred by a hook"
            );
        }
        _ => {}
    }
}

/// The one mapping from the pipeline's errors to API errors. `field`: the request's
/// field the failed step looked at, named where the problem is one of its values.
fn refused(field: &str, error: SubmitError) -> ApiError {
    let unavailable = |message: &str| ApiError::new(ErrorCode::Unavailable, message);
    match error {
        SubmitError::NotAccepting => {
            unavailable("a dependency of the server is down; try again shortly")
        }
        SubmitError::StorageFull => {
            unavailable("the message store is full (storage.limit_bytes); try again later")
        }
        SubmitError::UnknownUser(a) => ApiError::field(field, format!("no local user {a}")),
        SubmitError::TooBig { .. } | SubmitError::RelayDenied(_) => {
            ApiError::field(field, error.to_string())
        }
        SubmitError::TooManyRecipients { .. } | SubmitError::Rejected { .. } => {
            ApiError::field("to", error.to_string())
        }
        SubmitError::NoSuchSender(problem) => ApiError::field("from", problem.to_string()),
        SubmitError::Sender(_) => ApiError::field(
            field,
            format!(
                "{error}: the From: header may name only the sender's own address (also as a display name)"
            ),
        ),
        SubmitError::Deferred { hook, text } => ApiError::new(
            ErrorCode::Unavailable,
            format!("deferred by a {hook} hook, try again later: {text}"),
        ),
        SubmitError::Directory(e) => ApiError::from(e),
        SubmitError::NotStored(_) => {
            tracing::warn!(component = "api", error = %error, "message not stored");
            unavailable("the message could not be stored now; try again shortly")
        }
        SubmitError::StorageUnreachable(_) => {
            tracing::error!(component = "api", error = %error, "storage actor unreachable");
            unavailable("storage unavailable")
        }
        // About the whole message, not one field of the request.
        SubmitError::AuthFailed(_) | SubmitError::Spam(_) => {
            ApiError::new(ErrorCode::ValidationError, error.to_string())
        }
        SubmitError::AuthDeferred(text) => ApiError::new(ErrorCode::Unavailable, text),
        SubmitError::SendLimit(e) if e.permanent => ApiError::field("to", e.to_string()),
        SubmitError::SendLimit(e) => ApiError::new(ErrorCode::RateLimited, e.to_string()),
        SubmitError::SendCounters(_) => {
            tracing::warn!(component = "api", event = "send_counters_failed", error = %error, "send counters unavailable");
            unavailable("the send counters are unavailable; try again shortly")
        }
        SubmitError::SpamDeferred(text) => ApiError::new(
            ErrorCode::Unavailable,
            format!("deferred by the spam scanner, try again later: {text}"),
        ),
        SubmitError::Internal(_) => {
            tracing::error!(component = "api", error = %error, "message not taken: internal error");
            unavailable("internal error; try again shortly")
        }
        SubmitError::NotSigned(_) => {
            tracing::error!(component = "api", event = "message_not_signed", error = %error, "DKIM signature not made; message refused for now");
            unavailable("the message could not be DKIM-signed now; try again later")
        }
    }
}
