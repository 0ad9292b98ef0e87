//! `/api/v1/hooks` (admin): hooks from config.yaml (read-only here) and hooks created
//! through the API (stored in the database, seen by every node within seconds), their
//! circuit breakers, a manual breaker reset, and a test call. Every hook obeys
//! `hook_policy` (where it may connect); a URL whose host is an address the policy
//! refuses is refused here already. Hooks see every domain's mail, so these routes take
//! an admin key of every domain.

use actix_web::{HttpResponse, delete, get, post, put, web};
use chrono::Utc;
use mairust_actors::apikeys::Scope;
use mairust_actors::config::{HookConfig, HookEvent, HookFallback};
use mairust_actors::hooks::{BreakerState, HookSource, NotTestable, TestCall};
use mairust_actors::supervisor::Handles;
use mairust_entities::hook;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct HookView {
    pub id: String,
    pub event: HookEvent,
    pub url: String,
    pub timeout_ms: u64,
    pub on_timeout: HookFallback,
    pub on_error: HookFallback,
    pub breaker_failures: u32,
    pub breaker_cooldown_seconds: f64,
    pub enabled: bool,
    pub source: HookSource,
    pub breaker: BreakerState,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HookList {
    pub data: Vec<HookView>,
}

/// A hook as created or replaced through the API (the secret is never shown back).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookInput {
    /// Required to create: 1 to 64 letters, digits, '-', '_' or '.'. When replacing,
    /// absent or the same as in the path.
    pub id: Option<String>,
    pub event: HookEvent,
    /// http:// or https:// URL the hook is POSTed to. Its address (the host's, once
    /// resolved, at every call) must be public or in `hook_policy.allowed_networks`.
    pub url: String,
    /// HMAC-SHA256 key, at least 16 characters.
    pub secret: String,
    /// Default 2000.
    pub timeout_ms: Option<u64>,
    pub on_timeout: Option<HookFallback>,
    pub on_error: Option<HookFallback>,
    /// Default 5.
    pub breaker_failures: Option<u32>,
    /// Default 30.
    pub breaker_cooldown_seconds: Option<f64>,
    /// Default true.
    pub enabled: Option<bool>,
}

fn view(config: HookConfig, source: HookSource, breaker: BreakerState) -> HookView {
    HookView {
        id: config.id,
        event: config.event,
        url: config.url,
        timeout_ms: config.timeout_ms,
        on_timeout: config.on_timeout,
        on_error: config.on_error,
        breaker_failures: config.breaker_failures,
        breaker_cooldown_seconds: config.breaker_cooldown_seconds,
        enabled: config.enabled,
        source,
        breaker,
    }
}

fn find(handles: &Handles, id: &str) -> Result<HookView, ApiError> {
    handles
        .hooks
        .list()
        .into_iter()
        .find(|(c, _, _)| c.id == id)
        .map(|(c, s, b)| view(c, s, b))
        .ok_or_else(|| no_hook(id))
}

fn checked(handles: &Handles, id: String, input: HookInput) -> Result<HookConfig, ApiError> {
    let config = HookConfig {
        id,
        event: input.event,
        url: input.url,
        secret: input.secret,
        timeout_ms: input.timeout_ms.unwrap_or(2000),
        on_timeout: input.on_timeout.unwrap_or_default(),
        on_error: input.on_error.unwrap_or_default(),
        breaker_failures: input.breaker_failures.unwrap_or(5),
        breaker_cooldown_seconds: input.breaker_cooldown_seconds.unwrap_or(30.0),
        enabled: input.enabled.unwrap_or(true),
    };
    config
        .validate()
        .map_err(|(field, reason)| ApiError::field(field, reason))?;
    if let Some(refused) = handles.hooks.refused_literal(&config.url) {
        return Err(ApiError::field(
            "url",
            format!(
                "{} is {} and not in hook_policy.allowed_networks",
                refused.address,
                refused.range.name()
            ),
        ));
    }
    Ok(config)
}

fn text<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn row(config: &HookConfig) -> hook::ActiveModel {
    let now = Utc::now().fixed_offset();
    hook::ActiveModel {
        id: Set(config.id.clone()),
        event: Set(text(config.event)),
        url: Set(config.url.clone()),
        secret: Set(config.secret.clone()),
        timeout_ms: Set(config.timeout_ms as i64),
        on_timeout: Set(text(config.on_timeout)),
        on_error: Set(text(config.on_error)),
        breaker_failures: Set(config.breaker_failures as i32),
        breaker_cooldown_seconds: Set(config.breaker_cooldown_seconds),
        enabled: Set(config.enabled),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// The audit entry of a created or replaced hook (the secret stays out).
async fn audit_change(
    handles: &Handles,
    auth: &Authenticated,
    event: &'static str,
    config: &HookConfig,
) {
    let entry = auth
        .did(event)
        .target(&config.id)
        .detail("event", text(config.event))
        .detail("url", config.url.clone())
        .detail("enabled", config.enabled);
    handles.audit.record(entry).await;
}

fn no_hook(id: &str) -> ApiError {
    ApiError::not_found(format!("no hook {id}"))
}

fn read_only(id: &str) -> ApiError {
    ApiError::conflict(format!(
        "hook {id} is defined in config.yaml; change it there"
    ))
}

/// List every hook and its circuit breaker.
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
    auth.require_global(Scope::Admin)?;
    Ok(web::Json(HookList {
        data: handles
            .hooks
            .list()
            .into_iter()
            .map(|(c, s, b)| view(c, s, b))
            .collect(),
    }))
}

/// Get a hook.
#[utoipa::path(
    tag = "hooks",
    params(("id" = String, Path, description = "Hook id")),
    responses(
        (status = 200, description = "The hook", body = HookView),
        (status = 404, description = "No such hook", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[get("/hooks/{id}")]
pub async fn get(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<String>,
) -> Result<web::Json<HookView>, ApiError> {
    auth.require_global(Scope::Admin)?;
    Ok(web::Json(find(&handles, &id)?))
}

/// Create a hook (active on every node within seconds, at once on this one).
#[utoipa::path(
    tag = "hooks",
    request_body = HookInput,
    responses(
        (status = 201, description = "Created", body = HookView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 409, description = "A hook with this id exists", body = ErrorBody),
        (status = 422, description = "Invalid field, or a URL whose address hook_policy refuses", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/hooks")]
pub async fn create(
    auth: Authenticated,
    handles: web::Data<Handles>,
    body: web::Json<HookInput>,
) -> Result<HttpResponse, ApiError> {
    auth.require_global(Scope::Admin)?;
    let mut input = body.into_inner();
    let Some(id) = input.id.take() else {
        return Err(ApiError::field("id", "required"));
    };
    let config = checked(&handles, id, input)?;
    if handles.hooks.is_configured(&config.id)
        || hook::Entity::find_by_id(config.id.clone())
            .one(&handles.db)
            .await?
            .is_some()
    {
        return Err(ApiError::conflict(format!("hook {} exists", config.id)));
    }
    row(&config).insert(&handles.db).await?;
    handles.hooks.refresh(&handles.db).await?;
    audit_change(&handles, &auth, "hook.create", &config).await;
    Ok(HttpResponse::Created().json(find(&handles, &config.id)?))
}

/// Replace a hook created through the API.
#[utoipa::path(
    tag = "hooks",
    params(("id" = String, Path, description = "Hook id")),
    request_body = HookInput,
    responses(
        (status = 200, description = "Replaced", body = HookView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 404, description = "No such hook", body = ErrorBody),
        (status = 409, description = "Defined in config.yaml", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[put("/hooks/{id}")]
pub async fn replace(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<String>,
    body: web::Json<HookInput>,
) -> Result<web::Json<HookView>, ApiError> {
    auth.require_global(Scope::Admin)?;
    let id = id.into_inner();
    if handles.hooks.is_configured(&id) {
        return Err(read_only(&id));
    }
    let Some(existing) = hook::Entity::find_by_id(id.clone())
        .one(&handles.db)
        .await?
    else {
        return Err(no_hook(&id));
    };
    let mut input = body.into_inner();
    if input.id.take().is_some_and(|given| given != id) {
        return Err(ApiError::field(
            "id",
            "differs from the path (ids cannot change)",
        ));
    }
    let config = checked(&handles, id, input)?;
    let mut active = row(&config);
    active.created_at = Set(existing.created_at);
    active.update(&handles.db).await?;
    handles.hooks.refresh(&handles.db).await?;
    audit_change(&handles, &auth, "hook.update", &config).await;
    Ok(web::Json(find(&handles, &config.id)?))
}

/// Delete a hook created through the API.
#[utoipa::path(
    tag = "hooks",
    params(("id" = String, Path, description = "Hook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such hook", body = ErrorBody),
        (status = 409, description = "Defined in config.yaml", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[delete("/hooks/{id}")]
pub async fn remove(
    auth: Authenticated,
    handles: web::Data<Handles>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auth.require_global(Scope::Admin)?;
    let id = id.into_inner();
    if handles.hooks.is_configured(&id) {
        return Err(read_only(&id));
    }
    let removed = hook::Entity::delete_by_id(id.clone())
        .exec(&handles.db)
        .await?
        .rows_affected;
    if removed == 0 {
        return Err(no_hook(&id));
    }
    handles.hooks.refresh(&handles.db).await?;
    handles
        .audit
        .record(auth.did("hook.delete").target(&id))
        .await;
    Ok(HttpResponse::NoContent().finish())
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
    auth.require_global(Scope::Admin)?;
    if !handles.hooks.reset(&id) {
        return Err(no_hook(&id));
    }
    handles
        .audit
        .record(auth.did("hook.reset").target(id.as_str()))
        .await;
    Ok(web::Json(find(&handles, &id)?))
}

/// Call an enabled hook with a made-up message (its breaker is neither used nor
/// changed). The answer says only whether and how fast the hook answered: its body and
/// headers are not read back. Audited as `hook.test`: a completed call as a success
/// (whatever the hook answered), a disabled hook's refusal as a failure with
/// `details.reason` "disabled".
#[utoipa::path(
    tag = "hooks",
    params(("id" = String, Path, description = "Hook id")),
    responses(
        (status = 200, description = "How the call went: status and latency only", body = TestCall),
        (status = 404, description = "No such hook", body = ErrorBody),
        (status = 409, description = "The hook is disabled", body = ErrorBody),
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
    auth.require_global(Scope::Admin)?;
    let call = match handles.hooks.test(&id).await {
        Ok(call) => call,
        Err(NotTestable::NoSuchHook) => return Err(no_hook(&id)),
        Err(NotTestable::Disabled) => {
            // Refused, but asked for by an admin key: audited like a call.
            let entry = auth
                .was_refused("hook.test")
                .target(id.as_str())
                .detail("reason", "disabled");
            handles.audit.record(entry).await;
            return Err(ApiError::conflict(format!(
                "hook {id} is disabled; enable it to test it"
            )));
        }
    };
    let mut entry = auth
        .did("hook.test")
        .target(id.as_str())
        .detail("ok", call.ok)
        .detail("latency_ms", call.latency_ms);
    if let Some(status) = call.status {
        entry = entry.detail("status", status);
    }
    if let Some(error) = call.error {
        entry = entry.detail("error", text(error));
    }
    handles.audit.record(entry).await;
    Ok(web::Json(call))
}
