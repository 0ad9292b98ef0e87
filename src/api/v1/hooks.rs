//! `/api/v1/hooks` (admin): the configured hooks with their circuit breakers, a manual
//! breaker reset, and a test call.

use actix_web::{get, post, web};
use mairust_actors::apikeys::Scope;
use mairust_actors::config::{HookConfig, HookEvent, HookFallback};
use mairust_actors::hooks::{BreakerState, TestCall};
use mairust_actors::supervisor::Handles;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct HookView {
    pub id: String,
    #[schema(value_type = String, example = "pre_receive")]
    pub event: HookEvent,
    pub url: String,
    pub timeout_ms: u64,
    #[schema(value_type = String, example = "allow")]
    pub on_timeout: HookFallback,
    #[schema(value_type = String, example = "allow")]
    pub on_error: HookFallback,
    pub breaker_failures: u32,
    pub breaker_cooldown_seconds: f64,
    pub breaker: BreakerState,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HookList {
    pub data: Vec<HookView>,
}

fn view(config: HookConfig, breaker: BreakerState) -> HookView {
    HookView {
        id: config.id,
        event: config.event,
        url: config.url,
        timeout_ms: config.timeout_ms,
        on_timeout: config.on_timeout,
        on_error: config.on_error,
        breaker_failures: config.breaker_failures,
        breaker_cooldown_seconds: config.breaker_cooldown_seconds,
        breaker,
    }
}

fn find(handles: &Handles, id: &str) -> Result<HookView, ApiError> {
    handles
        .hooks
        .list()
        .into_iter()
        .find(|(c, _)| c.id == id)
        .map(|(c, b)| view(c, b))
        .ok_or_else(|| ApiError::not_found(format!("no hook {id}")))
}

/// List the hooks (from config.yaml) and their circuit breakers.
#[utoipa::path(
    tag = "hooks",
    responses((status = 200, description = "The hooks", body = HookList), AuthErrors),
    security(("bearer" = ["admin"]))
)]
#[get("/hooks")]
pub async fn list(
    auth: Authenticated,
    handles: web::Data<Handles>,
) -> Result<web::Json<HookList>, ApiError> {
    auth.require(Scope::Admin)?;
    Ok(web::Json(HookList {
        data: handles
            .hooks
            .list()
            .into_iter()
            .map(|(c, b)| view(c, b))
            .collect(),
    }))
}

/// Close a hook's circuit breaker now.
#[utoipa::path(
    tag = "hooks",
    params(("id" = String, Path, description = "Hook id")),
    responses(
        (status = 200, description = "The hook, breaker closed", body = HookView),
        (status = 404, description = "No such hook", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/hooks/{id}/reset")]
pub async fn reset(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<String>,
) -> Result<web::Json<HookView>, ApiError> {
    let caller = auth.require(Scope::Admin)?;
    if !handles.hooks.reset(&id) {
        return Err(ApiError::not_found(format!("no hook {id}")));
    }
    tracing::info!(component = "api", event = "hook_breaker_reset", hook = %id, by = %caller.name, "hook circuit breaker reset");
    Ok(web::Json(find(&handles, &id)?))
}

/// Call a hook with a made-up message (its breaker is neither used nor changed).
#[utoipa::path(
    tag = "hooks",
    params(("id" = String, Path, description = "Hook id")),
    responses(
        (status = 200, description = "How the call went", body = TestCall),
        (status = 404, description = "No such hook", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/hooks/{id}/test")]
pub async fn test(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<String>,
) -> Result<web::Json<TestCall>, ApiError> {
    auth.require(Scope::Admin)?;
    handles
        .hooks
        .test(&id)
        .await
        .map(web::Json)
        .ok_or_else(|| ApiError::not_found(format!("no hook {id}")))
}
