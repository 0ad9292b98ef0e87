//! `/api/v1/api-keys` (admin): create (the key is shown once), list, revoke. An admin
//! key limited to some domains manages only keys limited to some of its domains, and
//! makes only such keys: never one wider than itself.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use mairust_actors::apikeys::{self, KeyError, Scope};
use mairust_actors::supervisor::Handles;
use mairust_entities::api_key;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, PageQuery};
use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody, ErrorCode};

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: i64,
    pub name: String,
    /// The public start of the key (`mr_xxxxxxxx`).
    pub prefix: String,
    /// read, write, send, admin.
    pub scopes: Vec<String>,
    /// The domains the key is limited to; null for a key of every domain.
    pub domains: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_key::Model> for ApiKeyView {
    fn from(k: api_key::Model) -> Self {
        ApiKeyView {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            scopes: apikeys::parse_scopes(&k.scopes)
                .into_iter()
                .map(|s| s.to_string())
                .collect(),
            domains: apikeys::parse_domains(k.domains.as_deref()).map(|d| d.into_iter().collect()),
            created_at: k.created_at.to_utc(),
            last_used_at: k.last_used_at.map(|t| t.to_utc()),
            revoked_at: k.revoked_at.map(|t| t.to_utc()),
        }
    }
}

/// A new key: `key` is shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub api_key: ApiKeyView,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// What the key is for, e.g. `admin-ui`.
    pub name: String,
    /// One or more of read, write, send, admin; no more than the calling key has.
    pub scopes: Vec<String>,
    /// Limit the key to these existing domains: it then sees and changes only their
    /// users, mailboxes, messages and queue entries, and sends only from their
    /// addresses. Leave it out (or null) for a key of every domain; a key limited to
    /// some domains must give some of its own.
    #[serde(default)]
    pub domains: Option<Vec<String>>,
}

fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Invalid(field, m) => ApiError::field(field, m),
        KeyError::NotFound(id) => ApiError::not_found(format!("no API key with id {id}")),
        KeyError::Db(e) => e.into(),
    }
}

/// List API keys (revoked ones included; for a key limited to some domains, the keys
/// limited to some of its domains).
#[utoipa::path(
    tag = "api-keys",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of keys", body = Page<ApiKeyView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 422, description = "Invalid limit or cursor", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[get("/api-keys")]
pub async fn list(
    auth: Authenticated,
    handles: web::Data<Handles>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<ApiKeyView>>, ApiError> {
    let caller = auth.require(Scope::Admin)?;
    let limit = query.limit()?;
    let mut after = query.after_id()?;
    let mut items = Vec::new();
    // A limited caller sees only some keys, decided here from their domain lists: read
    // in batches until the page is full or the keys are all read.
    loop {
        let mut select = api_key::Entity::find().order_by_asc(api_key::Column::Id);
        if let Some(after) = after {
            select = select.filter(api_key::Column::Id.gt(after));
        }
        let rows = select.limit(limit + 1).all(&handles.db).await?;
        let exhausted = rows.len() as u64 <= limit;
        after = rows.last().map(|k| k.id).or(after);
        items.extend(
            rows.into_iter()
                .filter(|k| caller.may_see_key(k))
                .map(ApiKeyView::from),
        );
        if exhausted || items.len() as u64 > limit {
            break;
        }
    }
    items.truncate(limit as usize + 1);
    Ok(web::Json(Page::from_fetched(items, limit, |k| {
        k.id.to_string()
    })))
}

/// Create an API key, no wider than the calling one.
#[utoipa::path(
    tag = "api-keys",
    request_body = NewKey,
    responses(
        (status = 201, description = "Created; the key is in this answer only", body = CreatedKey),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope, or the new key would be wider than it (a scope it lacks, a domain it is not limited to, or every domain)", body = ErrorBody),
        (status = 422, description = "Invalid name, scopes or domains (or a domain that does not exist)", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/api-keys")]
pub async fn create(
    auth: Authenticated,
    handles: web::Data<Handles>,
    body: web::Json<NewKey>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require(Scope::Admin)?;
    let scopes = body
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<_, _>>()
        .map_err(|m| ApiError::field("scopes", m))?;
    let domains = body
        .domains
        .as_deref()
        .map(apikeys::normalize_domains)
        .transpose()
        .map_err(key_error)?;
    // Before the domains are looked up: a limited key learns nothing of other domains.
    caller
        .may_grant(&scopes, domains.as_ref())
        .map_err(|m| ApiError::new(ErrorCode::Forbidden, m))?;
    let created = apikeys::create(&handles.db, &body.name, &scopes, domains.as_ref())
        .await
        .map_err(key_error)?;
    handles
        .audit
        .record(
            auth.did("api_key.create")
                .target(created.record.id)
                .detail("name", created.record.name.clone())
                .detail("scopes", created.record.scopes.clone())
                .detail("domains", created.record.domains.clone()),
        )
        .await;
    Ok(HttpResponse::Created().json(CreatedKey {
        key: created.key,
        api_key: created.record.into(),
    }))
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(
    tag = "api-keys",
    params(("id" = i64, Path, description = "Key id")),
    responses(
        (status = 200, description = "Revoked", body = ApiKeyView),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key making the request cannot revoke itself", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[delete("/api-keys/{id}")]
pub async fn revoke(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<i64>,
) -> Result<web::Json<ApiKeyView>, ApiError> {
    let caller = auth.require(Scope::Admin)?;
    let id = id.into_inner();
    if id == caller.key_id {
        return Err(ApiError::conflict(
            "a key cannot revoke itself; use another admin key or `mairust admin revoke-key`",
        ));
    }
    // A key the caller may not see is answered as a missing one.
    let target = apikeys::get(&handles.db, id).await.map_err(key_error)?;
    if !caller.may_see_key(&target) {
        return Err(key_error(KeyError::NotFound(id)));
    }
    let key = apikeys::revoke(&handles.db, id).await.map_err(key_error)?;
    handles
        .audit
        .record(
            auth.did("api_key.revoke")
                .target(key.id)
                .detail("name", key.name.clone()),
        )
        .await;
    Ok(web::Json(key.into()))
}
