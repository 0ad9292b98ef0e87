//! `/api/v1/users`: local users (INBOX and Sent are created with each). Changing a
//! password or removing a user (after which the address could be created again with a
//! new password) takes an `admin` key: a `write` key must not be able to take over an
//! account.

use std::net::IpAddr;

use actix_web::{HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use mairust_actors::accounts::{self, AccountError};
use mairust_actors::apikeys::Scope;
use mairust_actors::config::MAX_SEND_LIMIT;
use mairust_actors::limits::sending;
use mairust_actors::supervisor::Handles;
use mairust_entities::{mailbox, user};
use sea_orm::query::Order;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::domains::{account_error, find_in_reach};
use super::{Page, PageQuery, reach};
use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody, ErrorCode};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    /// Lower-case address.
    pub address: String,
    pub disabled: bool,
    /// Manages the server when signed in to the Admin UI.
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    /// Mailbox names (INBOX, Sent, Junk, custom); only in single-user answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailboxes: Option<Vec<String>>,
    /// The user's send limits in force; only in single-user answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_limits: Option<SendLimitsView>,
}

/// Messages and recipients per hour the user may send (0: no limit).
#[derive(Debug, Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct SendLimitsBody {
    pub messages_per_hour: u64,
    pub recipients_per_hour: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SendLimitsView {
    pub messages_per_hour: u64,
    pub recipients_per_hour: u64,
    /// The user's own limits (set through the API) rather than `send_limits.*`.
    pub own: bool,
}

impl From<user::Model> for UserView {
    fn from(u: user::Model) -> Self {
        UserView {
            id: u.id,
            address: u.address,
            disabled: u.disabled,
            admin: u.admin,
            created_at: u.created_at.to_utc(),
            mailboxes: None,
            send_limits: None,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// `local@domain`; the domain must exist.
    pub address: String,
    /// Stored as an argon2id hash.
    pub password: String,
    /// The admin role: the user manages the server when signed in (an `admin` key of
    /// every domain may give it). Default false.
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Only users of this domain.
    pub domain: Option<String>,
}

/// List users.
#[utoipa::path(
    tag = "users",
    params(PageQuery, UserFilter),
    responses(
        (status = 200, description = "A page of users", body = Page<UserView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 404, description = "No such domain", body = ErrorBody),
        (status = 422, description = "Invalid limit, cursor or domain", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/users")]
pub async fn list(
    auth: Authenticated,
    handles: web::Data<Handles>,
    page: web::Query<PageQuery>,
    filter: web::Query<UserFilter>,
) -> Result<web::Json<Page<UserView>>, ApiError> {
    let caller = auth.require(Scope::Read)?;
    let page = page.keyset()?;
    let mut select = user::Entity::find();
    if let Some(name) = &filter.domain {
        let name = accounts::normalize_domain(name)
            .map_err(|_| ApiError::field("domain", format!("`{name}` is not a domain name")))?;
        let d = find_in_reach(&handles, caller, name).await?;
        select = select.filter(user::Column::DomainId.eq(d.id));
    }
    if let Some(domains) = &caller.domains {
        select = select.filter(user::Column::DomainId.in_subquery(reach::domain_ids(domains)));
    }
    let id = user::Column::Id;
    let found = page.fetch(&handles.db, select, id, Order::Asc, |u: &UserView| u.id);
    Ok(web::Json(found.await?))
}

/// Add a user.
#[utoipa::path(
    tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 404, description = "The address's domain does not exist", body = ErrorBody),
        (status = 409, description = "The user exists", body = ErrorBody),
        (status = 422, description = "Invalid address or empty password", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["write"]))
)]
#[post("/users")]
pub async fn create(
    auth: Authenticated,
    handles: web::Data<Handles>,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Write)?;
    if body.admin {
        auth.require_global(Scope::Admin)?;
    }
    if body.password.is_empty() {
        return Err(ApiError::field("password", "must not be empty"));
    }
    let address = accounts::parse_address(&body.address).map_err(account_error)?;
    if !auth.may_use(&address.domain) {
        return Err(account_error(AccountError::NoSuchDomain(address.domain)));
    }
    let hash = hash(&handles, auth.remote, body.password.clone()).await?;
    let u = accounts::add_user_hashed(&handles.db, &body.address, hash, body.admin)
        .await
        .map_err(account_error)?;
    handles
        .audit
        .record(
            auth.did("user.create")
                .target(&u.address)
                .detail("admin", u.admin),
        )
        .await;
    Ok(HttpResponse::Created().json(with_mailboxes(&handles, u).await?))
}

/// The answer for a user of a domain the key may not use: the one for a missing user.
pub(super) fn user_in_reach(auth: &Authenticated, address: &str) -> Result<(), ApiError> {
    match accounts::parse_address(address) {
        Ok(a) if !auth.may_use(&a.domain) => Err(account_error(AccountError::NoSuchUser(a.key()))),
        _ => Ok(()),
    }
}

/// 403 unless the caller is an admin of every domain, when the user `address` (as the
/// change will find it: trimmed, lower-cased) has the admin role: neither a key limited
/// to a domain nor a `write` key may change, disable, enable or remove the account of
/// someone who manages every domain (a new password, or a leaked one enabled again,
/// would be a way to become them).
async fn admin_needs_global(
    auth: &Authenticated,
    handles: &Handles,
    address: &str,
) -> Result<(), ApiError> {
    let Ok(parsed) = accounts::parse_address(address) else {
        return Ok(());
    };
    if let Some(u) = accounts::find_user(&handles.db, &parsed.key()).await?
        && u.admin
    {
        auth.require_global(Scope::Admin)?;
    }
    Ok(())
}

/// Hashes a new password within the node's bound on password work (503 when every slot
/// is taken), off the HTTP worker thread.
async fn hash(handles: &Handles, client: IpAddr, password: String) -> Result<String, ApiError> {
    handles
        .limits
        .password
        .hash(handles.limits.client(client), password)
        .await
        .map_err(|busy| ApiError::new(ErrorCode::Unavailable, busy.to_string()))?
        .map_err(account_error)
}

async fn with_mailboxes(handles: &Handles, u: user::Model) -> Result<UserView, ApiError> {
    let names: Vec<String> = mailbox::Entity::find()
        .select_only()
        .column(mailbox::Column::Name)
        .filter(mailbox::Column::UserId.eq(u.id))
        .order_by_asc(mailbox::Column::Id)
        .into_tuple()
        .all(&handles.db)
        .await?;
    let own = sending::limits_of(&handles.db, &u.address).await?;
    let config = &handles.config.send_limits;
    let mut view = UserView::from(u);
    view.mailboxes = Some(names);
    view.send_limits = Some(match own {
        Some(l) => SendLimitsView {
            messages_per_hour: l.messages_per_hour,
            recipients_per_hour: l.recipients_per_hour,
            own: true,
        },
        None => SendLimitsView {
            messages_per_hour: config.messages_per_hour,
            recipients_per_hour: config.recipients_per_hour,
            own: false,
        },
    });
    Ok(view)
}

/// Get a user with their mailboxes.
#[utoipa::path(
    tag = "users",
    params(("address" = String, Path, description = "The user's address")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/users/{address}")]
pub async fn get(
    auth: Authenticated,
    handles: web::Data<Handles>,
    address: web::Path<String>,
) -> Result<web::Json<UserView>, ApiError> {
    auth.require(Scope::Read)?;
    let found = match reach::address_domain(&address) {
        Some(domain) if !auth.may_use(&domain) => None,
        _ => accounts::find_user(&handles.db, &address).await?,
    };
    let u = found.ok_or_else(|| account_error(AccountError::NoSuchUser(address.into_inner())))?;
    Ok(web::Json(with_mailboxes(&handles, u).await?))
}

/// Remove a user and their mailboxes (an `admin` key: the address could then be
/// created again with a new password).
#[utoipa::path(
    tag = "users",
    params(("address" = String, Path, description = "The user's address")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "Not an address", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[delete("/users/{address}")]
pub async fn delete(
    auth: Authenticated,
    handles: web::Data<Handles>,
    address: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Admin)?;
    user_in_reach(&auth, &address)?;
    admin_needs_global(&auth, &handles, &address).await?;
    accounts::remove_user(&handles.db, &address)
        .await
        .map_err(account_error)?;
    handles
        .audit
        .record(auth.did("user.delete").target(address.to_lowercase()))
        .await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// A new password (stored as an argon2id hash); needs the `admin` scope.
    pub password: Option<String>,
    /// A disabled user cannot log in and receives no mail (550 5.1.1); disabling ends
    /// the user's sessions.
    pub disabled: Option<bool>,
    /// The admin role (an `admin` key of every domain, or an admin's session).
    pub admin: Option<bool>,
    /// The user's own send limits (`admin` scope); `null` returns the user to the
    /// configured `send_limits`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<SendLimitsBody>, nullable)]
    pub send_limits: Option<Option<SendLimitsBody>>,
}

/// A field that may be given as `null` (`Some(None)`) or left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Change a user's password (`admin` scope) or disable/enable them (`write`).
#[utoipa::path(
    tag = "users",
    params(("address" = String, Path, description = "The user's address")),
    request_body = UserUpdate,
    responses(
        (status = 200, description = "The changed user", body = UserView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "Invalid address, empty password or nothing to change", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["write"]))
)]
#[patch("/users/{address}")]
pub async fn update(
    auth: Authenticated,
    handles: web::Data<Handles>,
    address: web::Path<String>,
    body: web::Json<UserUpdate>,
) -> Result<web::Json<UserView>, ApiError> {
    auth.require(Scope::Write)?;
    let UserUpdate {
        password,
        disabled,
        admin,
        send_limits,
    } = body.into_inner();
    if password.is_some() {
        auth.require(Scope::Admin)?;
    }
    // The role that manages every domain is given by who manages every domain.
    if admin.is_some() {
        auth.require_global(Scope::Admin)?;
    }
    // A user's limits are the server's protection against a taken-over account: only
    // an admin key of every domain changes them.
    if send_limits.is_some() {
        auth.require_global(Scope::Admin)?;
    }
    if let Some(Some(l)) = &send_limits
        && (l.messages_per_hour > MAX_SEND_LIMIT || l.recipients_per_hour > MAX_SEND_LIMIT)
    {
        return Err(ApiError::field(
            "send_limits",
            format!("limits must be at most {MAX_SEND_LIMIT} (0: no limit)"),
        ));
    }
    if password.is_none() && disabled.is_none() && admin.is_none() && send_limits.is_none() {
        return Err(ApiError::field(
            "password",
            "give password, disabled, admin and/or send_limits",
        ));
    }
    if password.as_deref() == Some("") {
        return Err(ApiError::field("password", "must not be empty"));
    }
    let password_changed = password.is_some();
    accounts::parse_address(&address).map_err(account_error)?;
    user_in_reach(&auth, &address)?;
    admin_needs_global(&auth, &handles, &address).await?;
    let password_hash = match password {
        Some(p) => Some(hash(&handles, auth.remote, p).await?),
        None => None,
    };
    let u = accounts::update_user(
        &handles.db,
        &address,
        accounts::UserChange {
            password_hash,
            disabled,
            admin,
        },
    )
    .await
    .map_err(account_error)?;
    if let Some(limits) = send_limits {
        let limits = limits.map(|l| sending::Limits {
            messages_per_hour: l.messages_per_hour,
            recipients_per_hour: l.recipients_per_hour,
        });
        sending::set_limits_of(&handles.db, u.id, limits).await?;
    }
    handles
        .audit
        .record(
            auth.did("user.change")
                .target(&u.address)
                .detail("password_changed", password_changed)
                .detail("disabled", disabled)
                .detail("admin", admin)
                .detail(
                    "send_limits",
                    send_limits.map(|l| serde_json::to_value(l).unwrap_or_default()),
                ),
        )
        .await;
    Ok(web::Json(with_mailboxes(&handles, u).await?))
}
