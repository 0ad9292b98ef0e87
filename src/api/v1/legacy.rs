//! Deprecated routes (SPEC A5): they keep working and say when they go away.
//! `#[deprecated]` marks them in the OpenAPI document; the lint is allowed here because
//! the route macros themselves refer to the handlers.
#![allow(deprecated)]

use actix_web::{HttpResponse, post, web};
use mairust_actors::apikeys::Scope;
use mairust_actors::supervisor::Handles;

use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody};

/// The first name of `POST /queue/{id}/retry` (SPEC A1 says "retry-now"): kept working,
/// announced with `Deprecation` and `Sunset` headers (SPEC A5, 12 months).
#[utoipa::path(
    tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses(
        (status = 204, description = "Due now; the answer carries Deprecation, Sunset and a Link to the successor"),
        (status = 404, description = "Not queued", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["write"]))
)]
#[deprecated = "use POST /api/v1/queue/{id}/retry"]
#[post("/queue/{id}/retry-now")]
pub async fn retry_now(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require(Scope::Write)?;
    let successor = format!("/api/v1/queue/{id}/retry");
    let mut response = super::queue::retry_entry(&handles, caller, &id).await?;
    super::deprecated(
        &mut response,
        RETRY_NOW_DEPRECATED,
        RETRY_NOW_SUNSET,
        &successor,
    );
    Ok(response)
}

/// 2026-11-29T00:00:00Z and twelve months later.
const RETRY_NOW_DEPRECATED: i64 = 1_795_910_400;
const RETRY_NOW_SUNSET: i64 = 1_827_446_400;
