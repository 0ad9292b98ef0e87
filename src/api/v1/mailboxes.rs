//! `/api/v1/users/{address}/mailboxes`: INBOX and Sent come with each user; custom
//! mailboxes are added and removed here (SPEC M8).

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use mairust_actors::accounts;
use mairust_actors::apikeys::Scope;
use mairust_actors::supervisor::Handles;
use mairust_entities::mailbox;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::domains::account_error;
use super::users::user_in_reach;
use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxView {
    /// Use as `mailbox` in GET /messages.
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<mailbox::Model> for MailboxView {
    fn from(m: mailbox::Model) -> Self {
        MailboxView {
            id: m.id,
            name: m.name,
            created_at: m.created_at.to_utc(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxList {
    pub data: Vec<MailboxView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMailbox {
    pub name: String,
}

/// A user's mailboxes.
#[utoipa::path(
    tag = "users",
    params(("address" = String, Path, description = "The user's address")),
    responses(
        (status = 200, description = "The mailboxes", body = MailboxList),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "Not an address", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/users/{address}/mailboxes")]
pub async fn list(
    auth: Authenticated,
    handles: web::Data<Handles>,
    address: web::Path<String>,
) -> Result<web::Json<MailboxList>, ApiError> {
    // A signed-in user lists their own mailboxes.
    if !auth.is_user(&address) {
        auth.require(Scope::Read)?;
        user_in_reach(&auth, &address)?;
    }
    let boxes = accounts::list_mailboxes(&handles.db, &address)
        .await
        .map_err(account_error)?;
    Ok(web::Json(MailboxList {
        data: boxes.into_iter().map(MailboxView::from).collect(),
    }))
}

/// Add a custom mailbox.
#[utoipa::path(
    tag = "users",
    params(("address" = String, Path, description = "The user's address")),
    request_body = NewMailbox,
    responses(
        (status = 201, description = "Created", body = MailboxView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The mailbox exists", body = ErrorBody),
        (status = 422, description = "Invalid address or mailbox name", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["write"]))
)]
#[post("/users/{address}/mailboxes")]
pub async fn create(
    auth: Authenticated,
    handles: web::Data<Handles>,
    address: web::Path<String>,
    body: web::Json<NewMailbox>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Write)?;
    user_in_reach(&auth, &address)?;
    let m = accounts::add_mailbox(&handles.db, &address, &body.name)
        .await
        .map_err(account_error)?;
    handles
        .audit
        .record(
            auth.did("mailbox.create")
                .target(address.to_lowercase())
                .detail("mailbox", m.name.clone()),
        )
        .await;
    Ok(HttpResponse::Created().json(MailboxView::from(m)))
}

/// Remove a custom mailbox with its message entries (INBOX and Sent cannot go).
#[utoipa::path(
    tag = "users",
    params(
        ("address" = String, Path, description = "The user's address"),
        ("name" = String, Path, description = "Mailbox name")
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such user or mailbox", body = ErrorBody),
        (status = 422, description = "Invalid address, or INBOX/Sent", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["write"]))
)]
#[delete("/users/{address}/mailboxes/{name}")]
pub async fn remove(
    auth: Authenticated,
    handles: web::Data<Handles>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Write)?;
    let (address, name) = path.into_inner();
    user_in_reach(&auth, &address)?;
    accounts::remove_mailbox(&handles.db, &address, &name)
        .await
        .map_err(account_error)?;
    handles
        .audit
        .record(
            auth.did("mailbox.delete")
                .target(address.to_lowercase())
                .detail("mailbox", name),
        )
        .await;
    Ok(HttpResponse::NoContent().finish())
}
