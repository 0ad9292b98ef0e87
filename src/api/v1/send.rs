//! `POST /api/v1/send`: a message built with mail-builder from JSON, then stored and
//! routed like a submission: local recipients get it in their INBOX, the others through
//! the outbound queue (SPEC A1, M6). 202 only once it is durable.

use std::collections::HashSet;
use std::net::IpAddr;

use actix_web::{HttpRequest, HttpResponse, post, web};
use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use mairust_actors::accounts::{self, LocalRecipient, RecipientLookup};
use mairust_actors::apikeys::Scope;
use mairust_actors::config::HookEvent;
use mairust_actors::hooks::Verdict;
use mairust_actors::smtp::proto::command::Address;
use mairust_actors::storage::{IncomingMessage, StoreMessage};
use mairust_actors::supervisor::Handles;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody, ErrorCode};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Sender address; its domain must be one of ours (and one the key is limited to,
    /// for a key limited to some domains).
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
    /// Plain-text body; `text` or `html` (or both) is required.
    pub text: Option<String>,
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

fn parse(field: &str, address: &str) -> Result<Address, ApiError> {
    Address::parse(address.trim())
        .ok_or_else(|| ApiError::field(field, format!("`{address}` is not an address")))
}

/// Send a message.
#[utoipa::path(
    tag = "send",
    request_body = SendRequest,
    responses(
        (status = 202, description = "Stored: delivered locally and/or queued", body = SendResponse),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 422, description = "Invalid address, unknown local recipient, or no body", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["send"]))
)]
#[post("/send")]
pub async fn send(
    auth: Authenticated,
    handles: web::Data<Handles>,
    req: HttpRequest,
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
    if accounts::find_domain(&handles.db, &from.domain)
        .await?
        .is_none()
    {
        return Err(ApiError::field(
            "from",
            format!("{} is not one of this server's domains", from.domain),
        ));
    }
    if body.to.is_empty() && body.cc.is_empty() && body.bcc.is_empty() {
        return Err(ApiError::field("to", "at least one recipient is needed"));
    }
    if body.text.is_none() && body.html.is_none() {
        return Err(ApiError::field("text", "text or html is needed"));
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
    let remote_ip = req
        .peer_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let received = format!(
        "Received: from api ([{remote_ip}])\r\n\tby {hostname} (MaiRust) with HTTP id {id};\r\n\t{}\r\n",
        chrono::Utc::now().to_rfc2822()
    );
    let raw = builder
        .header(
            "X-MaiRust-Api-Key",
            Raw::new(auth.caller.key_id.to_string()),
        )
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
    let message = IncomingMessage::new(id.clone(), stored, sender, local, "api", remote_ip, remote);
    if !message.outbound.is_empty() && handles.hooks.has(HookEvent::PreSend) {
        match handles.hooks.pre_send(&message).await {
            Verdict::Allow { .. } => {}
            Verdict::Reject(text) => {
                return Err(ApiError::field(
                    "to",
                    format!("refused by a pre_send hook: {text}"),
                ));
            }
            Verdict::Tempfail(text) => {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("deferred by a pre_send hook, try again later: {text}"),
                ));
            }
        }
    }
    match handles.storage.send(StoreMessage::new(message)).await {
        Ok(Ok(())) => {
            tracing::info!(component = "api", event = "message_sent", id = %id, key = auth.caller.key_id, delivered = delivered.len(), queued = queued.len(), "message accepted through the API");
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
