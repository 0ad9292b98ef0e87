//! `/api/v1/queue`: the outbound queue, as `mairust queue` shows it.

use actix_web::{HttpResponse, delete, get, post, web};
use mairust_actors::apikeys::Scope;
use mairust_actors::queue::store::{self, DeleteError, EntryView, QueueStats};
use mairust_actors::supervisor::Handles;
use utoipa::IntoParams;

use super::{Page, Pagination};
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
    auth.require(Scope::Read)?;
    let limit = super::page_limit(query.limit)?;
    let mut entries = store::list(&handles.db, limit + 1).await?;
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

/// Queue figures.
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
    auth.require(Scope::Read)?;
    Ok(web::Json(store::stats(&handles.db).await?))
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
    auth.require(Scope::Write)?;
    retry_entry(&handles, &id).await
}

pub(super) async fn retry_entry(handles: &Handles, id: &str) -> Result<HttpResponse, ApiError> {
    if store::retry_now(&handles.db, id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(format!(
            "no queued message with id {id}"
        )))
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
    auth.require(Scope::Write)?;
    let keys = match store::delete(&handles.db, &id, &handles.node_id).await {
        Ok(keys) => keys,
        Err(DeleteError::NotFound(_)) => {
            return Err(ApiError::not_found(format!(
                "no queued message with id {id}"
            )));
        }
        Err(e @ DeleteError::InFlight { .. }) => return Err(ApiError::conflict(e.to_string())),
        Err(DeleteError::Db(e)) => return Err(e.into()),
    };
    handles.bodies.delete_unreferenced(&keys).await;
    Ok(HttpResponse::NoContent().finish())
}
