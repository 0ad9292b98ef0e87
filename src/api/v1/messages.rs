//! `/api/v1/messages`: messages as they sit in mailboxes. The id is the mailbox entry's
//! (a message delivered to three users is three entries sharing one stored body);
//! flags, tags and the soft delete (SPEC M7) belong to the entry. A key limited to some
//! domains reaches the entries of those domains' users only, a normal user's session
//! the user's own entries only ([`MailReach`]).

use actix_web::{HttpResponse, delete, get, patch, web};
use chrono::{DateTime, FixedOffset, Utc};
use mairust_actors::apikeys::Scope;
use mairust_actors::storage::envelope::{TAG_CHARS, valid_tag};
use mairust_actors::supervisor::Handles;
use mairust_entities::mailbox_message;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, JoinType, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, EntityTrait, QueryResult, Set};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::{IntoParams, ToSchema};

use super::{Page, PageQuery, reach};
use crate::api::auth::{Authenticated, MailReach};
use crate::api::error::{ApiError, AuthErrors, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// The mailbox entry's id.
    pub id: i64,
    /// The stored message's id (shared by every recipient's entry).
    pub message_id: String,
    pub user: String,
    pub mailbox_id: i64,
    pub mailbox: String,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The Date header.
    pub date: Option<DateTime<Utc>>,
    /// The Message-ID header, without angle brackets.
    pub header_message_id: Option<String>,
    pub size: i64,
    pub attachments: i32,
    /// Reverse-path; empty for the null sender.
    pub envelope_from: String,
    /// The account that submitted the message: the SMTP AUTH user, or the sender user
    /// of `POST /send`. Null for mail received from other servers.
    pub submitted_by: Option<String>,
    /// What the checks of mail from other servers found: `spf`, `spf_helo`, `dkim` (one per
    /// signature), `dmarc`, `dmarc_policy`, `arc`, `from_domain`, and `action` (accept,
    /// junk). Null for mail our users submitted.
    #[schema(value_type = Option<Object>)]
    pub authentication: Option<serde_json::Value>,
    /// What rspamd said: `score`, `required_score`, `action`, `symbols` ([name, score]
    /// pairs, highest first). Null when not scanned.
    #[schema(value_type = Option<Object>)]
    pub spam: Option<serde_json::Value>,
    pub received_at: DateTime<Utc>,
    pub flags: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageFilter {
    /// Text in the subject, From or To (case-insensitive).
    pub q: Option<String>,
    /// Text in the From header.
    pub from: Option<String>,
    /// Text in the To header.
    pub to: Option<String>,
    /// Received at or after this time (RFC 3339).
    pub after: Option<DateTime<FixedOffset>>,
    /// Received before this time (RFC 3339).
    pub before: Option<DateTime<FixedOffset>>,
    /// Only this mailbox (id).
    pub mailbox: Option<i64>,
    /// Only mailboxes of this name, e.g. `Junk` (mail the sender checks quarantined)
    /// or `INBOX`; with `user`, that user's.
    pub mailbox_name: Option<String>,
    /// Only messages with this tag.
    pub tag: Option<String>,
    /// Only this user's mailboxes (address).
    pub user: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagePatch {
    /// Replaces the flags, e.g. `["\\Seen", "\\Flagged"]`.
    pub flags: Option<Vec<String>>,
    /// Replaces the tags: letters, digits and `-_.:/`, 1 to 64 characters each.
    pub tags: Option<Vec<String>>,
}

pub(super) fn col(table: &str, column: &str) -> Expr {
    Expr::col((Alias::new(table), Alias::new(column)))
}

/// Entries with their message, user and mailbox; soft-deleted ones left out, and those
/// out of the caller's reach.
fn base_select(reach: MailReach<'_>) -> SelectStatement {
    let mut q = Query::select();
    for (table, column, name) in [
        ("mm", "id", "id"),
        ("mm", "message_id", "message_id"),
        ("mm", "mailbox_id", "mailbox_id"),
        ("mm", "flags", "flags"),
        ("mm", "tags", "tags"),
        ("u", "address", "user"),
        ("b", "name", "mailbox"),
        ("m", "subject", "subject"),
        ("m", "from_addr", "from_addr"),
        ("m", "to_addrs", "to_addrs"),
        ("m", "date", "date"),
        ("m", "message_id", "header_message_id"),
        ("m", "size", "size"),
        ("m", "attachments", "attachments"),
        ("m", "envelope_from", "envelope_from"),
        ("m", "submitted_by", "submitted_by"),
        ("m", "authentication", "authentication"),
        ("m", "spam", "spam"),
        ("m", "received_at", "received_at"),
    ] {
        q.expr_as(col(table, column), Alias::new(name));
    }
    q.from_as(Alias::new("mailbox_messages"), Alias::new("mm"))
        .join_as(
            JoinType::InnerJoin,
            Alias::new("messages"),
            Alias::new("m"),
            col("m", "id").equals((Alias::new("mm"), Alias::new("message_id"))),
        )
        .join_as(
            JoinType::InnerJoin,
            Alias::new("users"),
            Alias::new("u"),
            col("u", "id").equals((Alias::new("mm"), Alias::new("user_id"))),
        )
        .join_as(
            JoinType::InnerJoin,
            Alias::new("mailboxes"),
            Alias::new("b"),
            col("b", "id").equals((Alias::new("mm"), Alias::new("mailbox_id"))),
        )
        .and_where(col("mm", "deleted_at").is_null());
    narrow(&mut q, reach);
    q.to_owned()
}

/// Leaves out of a select over `mailbox_messages AS mm` the entries out of `reach`.
pub(super) fn narrow(q: &mut SelectStatement, reach: MailReach<'_>) {
    if let Some(domains) = reach.domains {
        q.and_where(col("mm", "user_id").in_subquery(reach::user_ids(domains)));
    }
    if let Some(user) = reach.user {
        q.and_where(col("mm", "user_id").eq(user));
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn view(row: &QueryResult) -> Result<MessageView, sea_orm::DbErr> {
    let date: Option<DateTime<FixedOffset>> = row.try_get("", "date")?;
    let received: DateTime<FixedOffset> = row.try_get("", "received_at")?;
    Ok(MessageView {
        id: row.try_get("", "id")?,
        message_id: row.try_get("", "message_id")?,
        user: row.try_get("", "user")?,
        mailbox_id: row.try_get("", "mailbox_id")?,
        mailbox: row.try_get("", "mailbox")?,
        subject: row.try_get("", "subject")?,
        from: row.try_get("", "from_addr")?,
        to: row.try_get("", "to_addrs")?,
        date: date.map(|d| d.to_utc()),
        header_message_id: row.try_get("", "header_message_id")?,
        size: row.try_get("", "size")?,
        attachments: row.try_get("", "attachments")?,
        envelope_from: row.try_get("", "envelope_from")?,
        submitted_by: row.try_get("", "submitted_by")?,
        authentication: row
            .try_get::<Option<String>>("", "authentication")?
            .and_then(|json| serde_json::from_str(&json).ok()),
        spam: row
            .try_get::<Option<String>>("", "spam")?
            .and_then(|json| serde_json::from_str(&json).ok()),
        received_at: received.to_utc(),
        flags: words(&row.try_get::<String>("", "flags")?),
        tags: words(&row.try_get::<String>("", "tags")?),
    })
}

/// `text` with LIKE's wildcards escaped (escape character `\`).
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Case-insensitive "contains" on a column.
fn contains(table: &str, column: &str, text: &str) -> Expr {
    let pattern = format!("%{}%", escape_like(&text.to_lowercase()));
    Expr::expr(Func::lower(col(table, column)))
        .like(sea_orm::sea_query::LikeExpr::new(pattern).escape('\\'))
}

fn valid_flag(f: &str) -> bool {
    let name = f.strip_prefix('\\').unwrap_or(f);
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !"(){%*\"\\]".contains(c))
}

pub(super) fn no_message(id: i64) -> ApiError {
    ApiError::not_found(format!("no message {id}"))
}

async fn fetch(handles: &Handles, reach: MailReach<'_>, id: i64) -> Result<MessageView, ApiError> {
    let select = base_select(reach)
        .and_where(col("mm", "id").eq(id))
        .to_owned();
    match handles.db.query_one(&select).await? {
        Some(row) => Ok(view(&row)?),
        None => Err(no_message(id)),
    }
}

/// List messages, newest first.
#[utoipa::path(
    tag = "messages",
    params(PageQuery, MessageFilter),
    responses(
        (status = 200, description = "A page of messages", body = Page<MessageView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 422, description = "Invalid limit or cursor", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/messages")]
pub async fn list(
    auth: Authenticated,
    handles: web::Data<Handles>,
    page: web::Query<PageQuery>,
    filter: web::Query<MessageFilter>,
) -> Result<web::Json<Page<MessageView>>, ApiError> {
    let reach = auth.mail_reach(Scope::Read)?;
    let limit = page.limit()?;
    let mut select = base_select(reach);
    if let Some(before_id) = page.after_id()? {
        select.and_where(col("mm", "id").lt(before_id));
    }
    if let Some(q) = &filter.q {
        select.cond_where(
            sea_orm::Condition::any()
                .add(contains("m", "subject", q))
                .add(contains("m", "from_addr", q))
                .add(contains("m", "to_addrs", q)),
        );
    }
    if let Some(from) = &filter.from {
        select.and_where(contains("m", "from_addr", from));
    }
    if let Some(to) = &filter.to {
        select.and_where(contains("m", "to_addrs", to));
    }
    if let Some(after) = filter.after {
        select.and_where(col("m", "received_at").gte(after.to_utc().fixed_offset()));
    }
    if let Some(before) = filter.before {
        select.and_where(col("m", "received_at").lt(before.to_utc().fixed_offset()));
    }
    if let Some(mailbox) = filter.mailbox {
        select.and_where(col("mm", "mailbox_id").eq(mailbox));
    }
    if let Some(name) = &filter.mailbox_name {
        select.and_where(col("b", "name").eq(name.as_str()));
    }
    if let Some(user) = &filter.user {
        select.and_where(col("u", "address").eq(user.trim().to_lowercase()));
    }
    if let Some(tag) = &filter.tag {
        if !valid_tag(tag) {
            return Err(ApiError::field("tag", "not a tag"));
        }
        // Tags are stored space-separated: the whole word, wherever it stands.
        let escaped = escape_like(tag);
        let like = |pattern: String| {
            col("mm", "tags").like(sea_orm::sea_query::LikeExpr::new(pattern).escape('\\'))
        };
        select.cond_where(
            sea_orm::Condition::any()
                .add(col("mm", "tags").eq(tag.as_str()))
                .add(like(format!("{escaped} %")))
                .add(like(format!("% {escaped}")))
                .add(like(format!("% {escaped} %"))),
        );
    }
    select
        .order_by((Alias::new("mm"), Alias::new("id")), Order::Desc)
        .limit(limit + 1);
    let rows = handles
        .db
        .query_all(&select)
        .instrument(tracing::info_span!("db.list_messages", limit))
        .await?;
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(web::Json(Page::from_fetched(items, limit, |m| {
        m.id.to_string()
    })))
}

/// Get one message's metadata.
#[utoipa::path(
    tag = "messages",
    params(("id" = i64, Path, description = "Mailbox entry id")),
    responses(
        (status = 200, description = "The message", body = MessageView),
        (status = 404, description = "No such message (or deleted)", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/messages/{id}")]
pub async fn get(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<i64>,
) -> Result<web::Json<MessageView>, ApiError> {
    let reach = auth.mail_reach(Scope::Read)?;
    Ok(web::Json(fetch(&handles, reach, id.into_inner()).await?))
}

/// Replace a message's flags and/or tags.
#[utoipa::path(
    tag = "messages",
    params(("id" = i64, Path, description = "Mailbox entry id")),
    request_body = MessagePatch,
    responses(
        (status = 200, description = "The updated message", body = MessageView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 404, description = "No such message (or deleted)", body = ErrorBody),
        (status = 422, description = "Invalid flag or tag", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["write"]))
)]
#[patch("/messages/{id}")]
pub async fn update(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<i64>,
    body: web::Json<MessagePatch>,
) -> Result<web::Json<MessageView>, ApiError> {
    let reach = auth.mail_reach(Scope::Write)?;
    let id = id.into_inner();
    let body = body.into_inner();
    fetch(&handles, reach, id).await?;
    let mut entry = mailbox_message::ActiveModel {
        id: Set(id),
        ..Default::default()
    };
    if let Some(flags) = body.flags {
        if let Some(bad) = flags.iter().find(|f| !valid_flag(f)) {
            return Err(ApiError::field("flags", format!("`{bad}` is not a flag")));
        }
        entry.flags = Set(dedup(flags).join(" "));
    }
    if let Some(tags) = body.tags {
        if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
            return Err(ApiError::field(
                "tags",
                format!("`{bad}` is not a tag (letters, digits, {TAG_CHARS}; 1 to 64)"),
            ));
        }
        entry.tags = Set(dedup(tags).join(" "));
    }
    mailbox_message::Entity::update(entry)
        .exec(&handles.db)
        .await?;
    Ok(web::Json(fetch(&handles, reach, id).await?))
}

fn dedup(mut items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.retain(|i| seen.insert(i.clone()));
    items
}

/// Delete a message from its mailbox (soft delete: hidden from now on, purged later).
#[utoipa::path(
    tag = "messages",
    params(("id" = i64, Path, description = "Mailbox entry id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such message (or already deleted)", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["write"]))
)]
#[delete("/messages/{id}")]
pub async fn remove(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let reach = auth.mail_reach(Scope::Write)?;
    let id = id.into_inner();
    use sea_orm::{ColumnTrait, QueryFilter};
    let mut delete = mailbox_message::Entity::update_many()
        .col_expr(
            mailbox_message::Column::DeletedAt,
            Expr::value(Utc::now().fixed_offset()),
        )
        .filter(mailbox_message::Column::Id.eq(id))
        .filter(mailbox_message::Column::DeletedAt.is_null());
    if let Some(domains) = reach.domains {
        delete =
            delete.filter(mailbox_message::Column::UserId.in_subquery(reach::user_ids(domains)));
    }
    if let Some(user) = reach.user {
        delete = delete.filter(mailbox_message::Column::UserId.eq(user));
    }
    let deleted = delete.exec(&handles.db).await?.rows_affected;
    if deleted == 0 {
        return Err(no_message(id));
    }
    Ok(HttpResponse::NoContent().finish())
}
