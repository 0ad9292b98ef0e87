//! `/api/v1` (SPEC A1–A6). Every handler is annotated for utoipa and registered with
//! `service(...)` on a utoipa-actix-web scope, so the OpenAPI document at
//! `/api/v1/openapi.json` is collected from the routes themselves.
//!
//! - [`domains`], [`users`], [`mailboxes`] — accounts (SPEC M8)
//! - [`dkim`] — a domain's DKIM keys and the DNS records it needs
//! - [`messages`] — messages in mailboxes: list, get, flags/tags, soft delete
//! - [`message_body`] — a message's body: raw, parsed, its HTML part sanitized
//! - [`queue`] — the outbound queue (SPEC M6, O13)
//! - [`send`] — POST /send: build, store, deliver or queue
//! - [`hooks`] — hooks and their circuit breakers (SPEC M9)
//! - [`keys`] — API keys (SPEC A2)
//! - [`audit`] — the audit log (SPEC O5)
//! - [`dashboard`] — every node's health and the server's recent figures (Admin UI)
//! - [`legacy`] — deprecated aliases with Deprecation/Sunset headers (SPEC A5)
//! - [`reach`] — what a key limited to some domains reaches
//! - [`session`] — people signing in and out (browser sessions of the Admin UI)

pub mod audit;
pub mod dashboard;
pub mod dkim;
pub mod domains;
pub mod hooks;
pub mod keys;
pub mod legacy;
pub mod mailboxes;
pub mod message_body;
pub mod messages;
pub mod queue;
pub mod reach;
pub mod send;
pub mod session;
pub mod users;

use sea_orm::query::Order;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::{ApiError, ErrorBody};

/// Longest page a list returns.
pub const MAX_LIMIT: u64 = 500;
pub const DEFAULT_LIMIT: u64 = 50;

/// A list's `limit`: default 50, 1 to 500.
pub fn page_limit(limit: Option<u64>) -> Result<u64, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", "must be between 1 and 500")),
    }
}

/// `limit` and `cursor` of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `pagination.cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<u64, ApiError> {
        page_limit(self.limit)
    }

    /// The cursor as the id it stands for.
    pub fn after_id(&self) -> Result<Option<i64>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| ApiError::field("cursor", "not a cursor from this list"))
            })
            .transpose()
    }

    /// The page asked for of a list of rows: 422 for a bad `limit` or `cursor`, before
    /// any other part of the request is looked at.
    pub fn keyset(&self) -> Result<Keyset, ApiError> {
        Ok(Keyset {
            limit: self.limit()?,
            after: self.after_id()?,
        })
    }
}

/// A validated page request of a list that runs along a numeric id column (keyset
/// pagination: the cursor is the last id of the page before), so that rows added or
/// removed between two pages neither repeat nor skip any.
pub struct Keyset {
    limit: u64,
    after: Option<i64>,
}

impl Keyset {
    /// One page of `select` in `order` of its `id` column, after the cursor: `limit + 1`
    /// rows read (the extra one only says there is more), each made an item with
    /// `T::from`, whose `id_of` is the next page's cursor.
    pub async fn fetch<E, T>(
        &self,
        db: &impl ConnectionTrait,
        mut select: Select<E>,
        id: E::Column,
        order: Order,
        id_of: impl Fn(&T) -> i64,
    ) -> Result<Page<T>, ApiError>
    where
        E: EntityTrait,
        T: ToSchema + From<E::Model>,
    {
        if let Some(after) = self.after {
            select = select.filter(match order {
                Order::Desc => id.lt(after),
                _ => id.gt(after),
            });
        }
        let rows = select
            .order_by(id, order)
            .limit(self.limit + 1)
            .all(db)
            .await?;
        let items = rows.into_iter().map(T::from).collect();
        Ok(Page::from_fetched(items, self.limit, |item| {
            id_of(item).to_string()
        }))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    /// Pass as `cursor` to get the next page; null on the last page.
    pub cursor: Option<String>,
    pub has_more: bool,
}

/// A page of a list (SPEC A3).
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

impl<T: ToSchema> Page<T> {
    /// From `limit + 1` fetched items: the extra one only says there is more.
    pub fn from_fetched(mut items: Vec<T>, limit: u64, cursor_of: impl Fn(&T) -> String) -> Self {
        let has_more = items.len() as u64 > limit;
        items.truncate(limit as usize);
        let cursor = if has_more {
            items.last().map(cursor_of)
        } else {
            None
        };
        Page {
            data: items,
            pagination: Pagination { cursor, has_more },
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `mairust admin create-key` or POST /api/v1/api-keys",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::api::auth::SESSION_COOKIE,
                "A signed-in user's session (POST /api/v1/session; `__Host-mairust_session` \
                 over HTTPS); every route takes one instead of a key. An admin user's acts as an admin key; a normal user's \
                 reaches the user's own mailboxes and messages only. Changes need the \
                 session's CSRF token in X-CSRF-Token.",
            ))),
        );
    }
}

/// The document's fixed parts; paths and schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "MaiRust API", description = "Administration API of the MaiRust mail server. Errors are always `{\"error\":{\"code\",\"message\",\"details\"}}`."),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "domains", description = "Local domains"),
        (name = "users", description = "Users and their mailboxes"),
        (name = "messages", description = "Messages in mailboxes"),
        (name = "send", description = "Sending mail"),
        (name = "queue", description = "The outbound queue"),
        (name = "hooks", description = "HTTP hooks (admin)"),
        (name = "api-keys", description = "API keys (admin)"),
        (name = "audit", description = "The audit log (admin)"),
        (name = "session", description = "Signing in and out (browser sessions)"),
        (name = "dashboard", description = "Nodes and figures (admin)")
    )
)]
pub struct ApiDoc;

/// Marks a response of a deprecated route (SPEC A5): `Deprecation` (RFC 9745, when it
/// was deprecated), `Sunset` (RFC 8594, when it goes away) and a `Link` to its successor.
pub fn deprecated(
    response: &mut actix_web::HttpResponse,
    since: i64,
    sunset: i64,
    successor: &str,
) {
    use actix_web::http::header::{HeaderName, HeaderValue};
    let sunset = chrono::DateTime::from_timestamp(sunset, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let headers = response.headers_mut();
    for (name, value) in [
        ("deprecation", format!("@{since}")),
        ("sunset", sunset),
        ("link", format!("<{successor}>; rel=\"successor-version\"")),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

#[allow(deprecated)]
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(domains::list)
        .service(domains::create)
        .service(domains::get)
        .service(domains::delete)
        .service(dkim::list)
        .service(dkim::create)
        .service(dkim::rotate)
        .service(dkim::remove)
        .service(dkim::dns)
        .service(users::list)
        .service(users::create)
        .service(users::get)
        .service(users::update)
        .service(users::delete)
        .service(mailboxes::list)
        .service(mailboxes::create)
        .service(mailboxes::remove)
        .service(messages::list)
        .service(messages::get)
        .service(message_body::raw)
        .service(message_body::content)
        .service(message_body::html)
        .service(messages::update)
        .service(messages::remove)
        .service(send::send)
        .service(queue::list)
        .service(queue::stats)
        .service(queue::retry)
        .service(legacy::retry_now)
        .service(queue::delete)
        .service(hooks::list)
        .service(hooks::create)
        .service(hooks::get)
        .service(hooks::replace)
        .service(hooks::remove)
        .service(hooks::reset)
        .service(hooks::test)
        .service(keys::list)
        .service(keys::create)
        .service(keys::revoke)
        .service(audit::list)
        .service(dashboard::nodes)
        .service(dashboard::stats)
        .service(session::sign_in)
        .service(session::get)
        .service(session::sign_out)
        .service(session::sign_out_everywhere);
}
