//! `/api/v1/domains`: the domains this server receives mail for. Adding or removing one
//! takes an `admin` key of every domain: a new domain captures the mail local users send
//! to it, and a removed one takes its users' mail with it.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use mairust_actors::accounts::{self, AccountError};
use mairust_actors::apikeys::{Caller, Scope};
use mairust_actors::supervisor::Handles;
use mairust_entities::domain;
use sea_orm::query::Order;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, PageQuery};
use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct DomainView {
    pub id: i64,
    /// Lower-case domain name.
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<domain::Model> for DomainView {
    fn from(d: domain::Model) -> Self {
        DomainView {
            id: d.id,
            name: d.name,
            created_at: d.created_at.to_utc(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// e.g. `example.org`.
    pub name: String,
}

/// Account errors as API errors.
pub fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::Db(e) => e.into(),
        AccountError::DomainExists(_)
        | AccountError::UserExists(_)
        | AccountError::MailboxExists(_) => ApiError::conflict(e.to_string()),
        AccountError::NoSuchDomain(d) => ApiError::not_found(format!("no domain {d}")),
        AccountError::NoSuchUser(u) => ApiError::not_found(format!("no user {u}")),
        AccountError::NoSuchMailbox(m) => ApiError::not_found(format!("no mailbox {m}")),
        AccountError::DefaultMailbox(_) => ApiError::field("name", e.to_string()),
        AccountError::Invalid(value, what) => {
            let field = match what {
                "domain name" | "mailbox name" => "name",
                other => other,
            };
            ApiError::field(field, format!("`{value}` is not a valid {what}"))
        }
        AccountError::Hash(_) => {
            tracing::error!(component = "api", error = %e, "password hashing failed");
            ApiError::new(
                crate::api::error::ErrorCode::InternalError,
                "internal error",
            )
        }
    }
}

/// List domains.
#[utoipa::path(
    tag = "domains",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of domains", body = Page<DomainView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 422, description = "Invalid limit or cursor", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/domains")]
pub async fn list(
    auth: Authenticated,
    handles: web::Data<Handles>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<DomainView>>, ApiError> {
    let caller = auth.require(Scope::Read)?;
    let page = query.keyset()?;
    let mut select = domain::Entity::find();
    if let Some(domains) = &caller.domains {
        select = select.filter(domain::Column::Name.is_in(domains.iter().cloned()));
    }
    let id = domain::Column::Id;
    let found = page.fetch(&handles.db, select, id, Order::Asc, |d: &DomainView| d.id);
    Ok(web::Json(found.await?))
}

/// Add a domain (an `admin` key of every domain).
#[utoipa::path(
    tag = "domains",
    request_body = NewDomain,
    responses(
        (status = 201, description = "Created", body = DomainView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 409, description = "The domain exists", body = ErrorBody),
        (status = 422, description = "Not a domain name", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/domains")]
pub async fn create(
    auth: Authenticated,
    handles: web::Data<Handles>,
    body: web::Json<NewDomain>,
) -> Result<HttpResponse, ApiError> {
    auth.require_global(Scope::Admin)?;
    let d = accounts::add_domain(&handles.db, &body.name)
        .await
        .map_err(account_error)?;
    handles
        .audit
        .record(auth.did("domain.create").target(&d.name))
        .await;
    Ok(HttpResponse::Created().json(DomainView::from(d)))
}

/// Get a domain.
#[utoipa::path(
    tag = "domains",
    params(("name" = String, Path, description = "Domain name")),
    responses(
        (status = 200, description = "The domain", body = DomainView),
        (status = 404, description = "No such domain", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/domains/{name}")]
pub async fn get(
    auth: Authenticated,
    handles: web::Data<Handles>,
    name: web::Path<String>,
) -> Result<web::Json<DomainView>, ApiError> {
    auth.require(Scope::Read)?;
    let name = name.into_inner().to_ascii_lowercase();
    Ok(web::Json(
        find_in_reach(&handles, &auth.caller, name).await?.into(),
    ))
}

/// The domain `name` (lower-case) for `caller`: 404 when there is none, and for another
/// domain than those of a key limited to some (answered as a missing one).
pub(super) async fn find_in_reach(
    handles: &Handles,
    caller: &Caller,
    name: String,
) -> Result<domain::Model, ApiError> {
    let found = if caller.may_use(&name) {
        accounts::find_domain(&handles.db, &name).await?
    } else {
        None
    };
    found.ok_or_else(|| account_error(AccountError::NoSuchDomain(name)))
}

/// Remove a domain with its users and their mailboxes (an `admin` key of every domain).
#[utoipa::path(
    tag = "domains",
    params(("name" = String, Path, description = "Domain name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such domain", body = ErrorBody),
        (status = 422, description = "Not a domain name", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[delete("/domains/{name}")]
pub async fn delete(
    auth: Authenticated,
    handles: web::Data<Handles>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auth.require_global(Scope::Admin)?;
    accounts::remove_domain(&handles.db, &name)
        .await
        .map_err(account_error)?;
    handles
        .audit
        .record(auth.did("domain.delete").target(name.to_ascii_lowercase()))
        .await;
    Ok(HttpResponse::NoContent().finish())
}
