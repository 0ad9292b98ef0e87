//! `/api/v1/queue`: the outbound queue, as `mairust queue` shows it. A key limited to
//! some domains reaches the entries whose sender is in one of them (not bounces, whose
//! sender is empty), and not the node-wide figures.

use actix_web::{HttpResponse, delete, get, post, web};
use mairust_actors::apikeys::{Caller, Scope};
use mairust_actors::queue::admin::{self, DeleteError, EntryView, QueueStats};
use mairust_actors::supervisor::Handles;
use utoipa::IntoParams;

use super::{Page, Pagination, reach};
use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody};

#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Entries to return, next attempt first (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// List queued messages, next attempt first.
#[utoipa::path(
    tag = "queue",
    params(QueueQuery),
    responses(
        (status = 200, description = "Queued messages (one page; `has_more` says whether more are queued)", body = Page<EntryView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 422, description = "Invalid limit", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/queue")]
pub async fn list(
    auth: Authenticated,
    handles: web::Data<Handles>,
    query: web::Query<QueueQuery>,
) -> Result<web::Json<Page<EntryView>>, ApiError> {
    let caller = auth.require(Scope::Read)?;
    let limit = super::page_limit(query.limit)?;
    let mut entries = admin::list(&handles.db, limit + 1, caller.domains.as_ref()).await?;
    let has_more = entries.len() as u64 > limit;
    entries.truncate(limit as usize);
    Ok(web::Json(Page {
        data: entries,
        pagination: Pagination {
            cursor: None,
            has_more,
        },
    }))
}

/// Queue figures (a key of every domain: they count every domain's mail).
#[utoipa::path(
    tag = "queue",
    responses(
        (status = 200, description = "Queue figures", body = QueueStats),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/queue/stats")]
pub async fn stats(
    auth: Authenticated,
    handles: web::Data<Handles>,
) -> Result<web::Json<QueueStats>, ApiError> {
    auth.require_global(Scope::Read)?;
    Ok(web::Json(admin::stats(&handles.db).await?))
}
/// Make a queued message due now.
#[utoipa::path(
    tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses(
        (status = 204, description = "Due now"),
        (status = 404, description = "Not queued", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["write"]))
)]
#[post("/queue/{id}/retry")]
pub async fn retry(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require(Scope::Write)?;
    retry_entry(&handles, caller, &id).await
}

fn not_queued(id: &str) -> ApiError {
    ApiError::not_found(format!("no queued message with id {id}"))
}

/// 404, as for an entry that is not queued, when `caller` is limited to domains and the
/// entry's sender is in none of them.
async fn entry_in_reach(handles: &Handles, caller: &Caller, id: &str) -> Result<(), ApiError> {
    if caller.domains.is_none() {
        return Ok(());
    }
    let sender = admin::sender(&handles.db, id).await?;
    let domain = sender.as_deref().and_then(reach::address_domain);
    match domain {
        Some(d) if caller.may_use(&d) => Ok(()),
        _ => Err(not_queued(id)),
    }
}

pub(super) async fn retry_entry(
    handles: &Handles,
    caller: &Caller,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    entry_in_reach(handles, caller, id).await?;
    if admin::retry_now(&handles.db, id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_queued(id))
    }
}

/// Drop a queued message without delivering or bouncing it.
#[utoipa::path(
    tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Not queued", body = ErrorBody),
        (status = 409, description = "Being delivered right now", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["write"]))
)]
#[delete("/queue/{id}")]
pub async fn delete(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require(Scope::Write)?;
    entry_in_reach(&handles, caller, &id).await?;
    let keys = match admin::delete(&handles.db, &id, &handles.node_id).await {
        Ok(keys) => keys,
        Err(DeleteError::NotFound(_)) => return Err(not_queued(&id)),
        Err(e @ DeleteError::InFlight { .. }) => return Err(ApiError::conflict(e.to_string())),
        Err(DeleteError::Db(e)) => return Err(e.into()),
    };
    handles.bodies.delete_unreferenced(&keys).await;
    // Mail dropped by hand: who did it stays on record.
    handles
        .audit
        .record(auth.did("queue.delete").target(id.as_str()))
        .await;
    Ok(HttpResponse::NoContent().finish())
}
