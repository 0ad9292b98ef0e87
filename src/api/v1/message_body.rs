//! A message's body: `/messages/{id}/raw` (the bytes as stored), `/content` (parsed:
//! header fields, the text, attachments named) and `/html` (its HTML part sanitized,
//! served as a document of its own with a Content-Security-Policy that runs no script,
//! loads nothing from elsewhere and sandboxes it, for the Admin UI's sandboxed frame).
//! Parsing and sanitizing run on the blocking pool: a body may be megabytes.

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};
use bytes::Bytes;
use mairust_actors::apikeys::Scope;
use mairust_actors::health_state::Dependency;
use mairust_actors::storage::bodies::BodyError;
use mairust_actors::supervisor::Handles;
use mairust_entities::unflushed_message;
use sea_orm::sea_query::{Alias, ExprTrait, JoinType, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait};
use serde::Serialize;
use utoipa::ToSchema;

use super::messages::{col, narrow, no_message};
use crate::api::auth::{Authenticated, MailReach};
use crate::api::error::{ApiError, AuthErrors, ErrorBody, ErrorCode};

/// The message as received (RFC 5322 bytes, our Received header first).
#[utoipa::path(
    tag = "messages",
    params(("id" = i64, Path, description = "Mailbox entry id")),
    responses(
        (status = 200, description = "The raw message", content_type = "message/rfc822", body = Vec<u8>),
        (status = 401, description = "No or invalid API key", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope", body = ErrorBody),
        (status = 404, description = "No such message (or deleted)", body = ErrorBody),
        (status = 429, description = "Too many failed authentications", body = ErrorBody),
        (status = 500, description = "The body is missing from the object store", body = ErrorBody),
        (status = 503, description = "Database or object store unavailable, or the message still being stored", body = ErrorBody)
    ),
    security(("bearer" = ["read"]))
)]
#[get("/messages/{id}/raw")]
pub async fn raw(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let reach = auth.mail_reach(Scope::Read)?;
    let id = id.into_inner();
    let bytes = load(&handles, reach, id).await?;
    // The sender's bytes: downloaded, never rendered by a browser as a page of ours.
    Ok(HttpResponse::Ok()
        .content_type("message/rfc822")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"message-{id}.eml\""),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ))
        .body(bytes))
}

/// The stored body of the mailbox entry `id` within `reach`: 404 when out of reach or
/// deleted, 503 while the store is down or the body is still being written, 500 when
/// it is missing.
async fn load(handles: &Handles, reach: MailReach<'_>, id: i64) -> Result<Bytes, ApiError> {
    let mut select = Query::select()
        .expr_as(col("m", "object_key"), Alias::new("object_key"))
        .expr_as(col("m", "size"), Alias::new("size"))
        .expr_as(col("m", "id"), Alias::new("message_id"))
        .from_as(Alias::new("mailbox_messages"), Alias::new("mm"))
        .join_as(
            JoinType::InnerJoin,
            Alias::new("messages"),
            Alias::new("m"),
            col("m", "id").equals((Alias::new("mm"), Alias::new("message_id"))),
        )
        .and_where(col("mm", "id").eq(id))
        .and_where(col("mm", "deleted_at").is_null())
        .to_owned();
    narrow(&mut select, reach);
    let Some(row) = handles.db.query_one(&select).await? else {
        return Err(no_message(id));
    };
    let key: String = row.try_get("", "object_key")?;
    if !handles.health.get(Dependency::Storage).up {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the object store is unavailable; the message body cannot be read now",
        ));
    }
    let size: i64 = row.try_get("", "size")?;
    let message_id: String = row.try_get("", "message_id")?;
    match handles.bodies.get(&key).await {
        // A message listed while it is being stored (SQLite: its rows commit beside
        // its body, which is written in place): not complete yet.
        Ok(bytes)
            if bytes.len() as i64 != size && being_stored(&handles.db, &message_id).await? =>
        {
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "the message is still being stored; try again in a moment",
            ))
        }
        Ok(bytes) => Ok(bytes),
        Err(BodyError::NotFound(_)) if being_stored(&handles.db, &message_id).await? => {
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "the message is still being stored; try again in a moment",
            ))
        }
        Err(BodyError::NotFound(_)) => {
            tracing::error!(component = "api", id, key = %key, "message body missing from the object store");
            Err(ApiError::new(
                ErrorCode::InternalError,
                "the message body is missing from the object store (run `mairust db check`)",
            ))
        }
        Err(e) => {
            tracing::warn!(component = "api", id, error = %e, "object store read failed");
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "the object store is unavailable; the message body cannot be read now",
            ))
        }
    }
}

/// Whether the message's rows are journalled: committed while its body is still being
/// written (see the StorageActor's Parallel mode).
async fn being_stored(db: &DatabaseConnection, message_id: &str) -> Result<bool, ApiError> {
    Ok(
        unflushed_message::Entity::find_by_id(message_id.to_string())
            .one(db)
            .await?
            .is_some(),
    )
}

/// One header field as it stands in the message (unfolded; encoded words left as
/// they are).
#[derive(Debug, Serialize, ToSchema)]
pub struct HeaderField {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Attachment {
    /// The name the sender gave, if any.
    pub filename: Option<String>,
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
}

/// A message parsed for reading.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageContent {
    /// The header fields in order (at most 500).
    pub headers: Vec<HeaderField>,
    /// The text body (from the HTML part when there is no text part); null when none.
    pub text: Option<String>,
    /// Whether the message has an HTML part (`/messages/{id}/html` serves it).
    pub has_html: bool,
    pub attachments: Vec<Attachment>,
}

/// Header fields shown at most; a message may carry thousands.
const MAX_HEADERS: usize = 500;
/// Longest header value shown.
const MAX_HEADER_VALUE: usize = 8 * 1024;

/// `work` done on the blocking pool over the body of the entry `id` the caller reaches.
async fn parsed<T: Send + 'static>(
    auth: &Authenticated,
    handles: &Handles,
    id: i64,
    work: fn(&[u8]) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let bytes = load(handles, auth.mail_reach(Scope::Read)?, id).await?;
    web::block(move || work(&bytes))
        .await
        .map_err(|e| ApiError::new(ErrorCode::InternalError, e.to_string()))?
}

fn parse(bytes: &[u8]) -> Result<mail_parser::Message<'_>, ApiError> {
    mail_parser::MessageParser::default()
        .parse(bytes)
        .ok_or_else(|| ApiError::new(ErrorCode::InternalError, "the message cannot be parsed"))
}

fn content_of(bytes: &[u8]) -> Result<MessageContent, ApiError> {
    use mail_parser::MimeHeaders;
    let message = parse(bytes)?;
    let headers = message
        .headers()
        .iter()
        .take(MAX_HEADERS)
        .map(|h| {
            let field = bytes
                .get(h.offset_start as usize..h.offset_end as usize)
                .unwrap_or_default();
            let value: String = String::from_utf8_lossy(field)
                .split(['\r', '\n'])
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            HeaderField {
                name: h.name.as_str().to_string(),
                value: value.chars().take(MAX_HEADER_VALUE).collect(),
            }
        })
        .collect();
    let attachments = message
        .attachments()
        .map(|part| Attachment {
            filename: part.attachment_name().map(str::to_string),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into()),
            size: part.len(),
        })
        .collect();
    Ok(MessageContent {
        headers,
        text: message.body_text(0).map(|t| t.into_owned()),
        has_html: message.html_bodies().any(|p| p.is_text_html()),
        attachments,
    })
}

/// A message parsed for reading: header fields, text, attachments.
#[utoipa::path(
    tag = "messages",
    params(("id" = i64, Path, description = "Mailbox entry id")),
    responses(
        (status = 200, description = "The message's content", body = MessageContent),
        (status = 404, description = "No such message (or deleted)", body = ErrorBody),
        (status = 500, description = "The body is missing or cannot be parsed", body = ErrorBody),
        (status = 503, description = "Database or object store unavailable, or the message still being stored", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/messages/{id}/content")]
pub async fn content(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<i64>,
) -> Result<web::Json<MessageContent>, ApiError> {
    Ok(web::Json(
        parsed(&auth, &handles, id.into_inner(), content_of).await?,
    ))
}

/// The policy the HTML part is served under: nothing runs, nothing is fetched (images
/// only from `data:` URLs), no form is sent, and the document is sandboxed even when
/// opened on its own.
const HTML_POLICY: &str = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; \
     form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox";

/// The HTML part with everything active or remote removed: scripts, event handler
/// attributes, styles that could fetch, forms, frames; images only from `data:` or
/// `cid:` URLs; links keep their address but open nothing from the frame.
pub fn sanitize(dirty: &str) -> String {
    let mut builder = ammonia::Builder::default();
    builder
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .add_url_schemes(["data", "cid"])
        .attribute_filter(|element, attribute, value| {
            // As browsers read a URL: any case, and tabs, line ends, spaces and controls
            // anywhere in the scheme ignored.
            let url: String = value
                .chars()
                .filter(|c| !c.is_whitespace() && !c.is_control())
                .take(8)
                .collect::<String>()
                .to_ascii_lowercase();
            let embedded = url.starts_with("data:") || url.starts_with("cid:");
            match (element, attribute) {
                // Images only from the message itself: a remote one tells the sender
                // the message was read.
                ("img", "src") if !embedded => None,
                ("img", "src") => Some(value.into()),
                (_, "srcset" | "background" | "poster") => None,
                // data: and cid: nowhere else (a data: link is a page of its own).
                _ if embedded => None,
                _ => Some(value.into()),
            }
        });
    builder.clean(dirty).to_string()
}

fn html_of(bytes: &[u8]) -> Result<Option<String>, ApiError> {
    let message = parse(bytes)?;
    let Some(part) = message.html_bodies().find(|p| p.is_text_html()) else {
        return Ok(None);
    };
    let part_html = match &part.body {
        mail_parser::PartType::Html(text) => text.as_ref(),
        _ => return Ok(None),
    };
    Ok(Some(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>{}</body></html>\n",
        sanitize(part_html)
    )))
}

/// The HTML part, sanitized, as a document of its own (for a sandboxed frame).
#[utoipa::path(
    tag = "messages",
    params(("id" = i64, Path, description = "Mailbox entry id")),
    responses(
        (status = 200, description = "The sanitized HTML part", content_type = "text/html", body = String),
        (status = 404, description = "No such message, or it has no HTML part", body = ErrorBody),
        (status = 500, description = "The body is missing or cannot be parsed", body = ErrorBody),
        (status = 503, description = "Database or object store unavailable, or the message still being stored", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/messages/{id}/html")]
pub async fn html(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let document = parsed(&auth, &handles, id, html_of).await?;
    let Some(document) = document else {
        return Err(ApiError::not_found(format!(
            "message {id} has no HTML part"
        )));
    };
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, HTML_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(document))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_active_or_remote_survives() {
        let dirty = r#"<p onclick="alert(1)">hi<script>alert(2)</script></p>
<img src="https://tracker.example/pixel.gif" onerror="alert(3)">
<img src="data:image/png;base64,AAAA">
<a href="javascript:alert(4)">x</a><a href="https://example.org/">ok</a>
<a href=" DATA:text/html,<script>alert(6)</script>">d</a><a href="da&#9;ta:text/html,x7">t</a><img src=" HTTPS://tracker.example/b.gif">
<iframe src="https://example.org/"></iframe><form action="https://x/"><input></form>
<style>body{background:url(https://x/)}</style><svg onload="alert(5)"></svg>"#;
        let clean = sanitize(dirty);
        for gone in [
            "onclick",
            "onerror",
            "onload",
            "<script",
            "alert(2)",
            "tracker.example",
            "javascript:",
            "<iframe",
            "<form",
            "<style",
            "url(",
        ] {
            assert!(!clean.contains(gone), "{gone} in {clean}");
        }
        assert!(clean.contains("data:image/png;base64,AAAA"), "{clean}");
        assert!(clean.contains("href=\"https://example.org/\""), "{clean}");
        assert!(clean.contains("noopener noreferrer"), "{clean}");
    }

    #[test]
    fn content_lists_headers_text_and_attachments() {
        let message = b"From: <a@remote.test>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nX-Long: one\r\n two\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n\r\n%PDF\r\n--b--\r\n";
        let c = content_of(message).unwrap();
        let long = c.headers.iter().find(|h| h.name == "X-Long").unwrap();
        assert_eq!(long.value, "one two");
        assert_eq!(c.text.as_deref().map(str::trim), Some("hello"));
        assert!(!c.has_html);
        assert_eq!(c.attachments.len(), 1);
        assert_eq!(c.attachments[0].filename.as_deref(), Some("r.pdf"));
        assert_eq!(c.attachments[0].content_type, "application/pdf");
    }
}
