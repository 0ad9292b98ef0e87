//! `/api/v1/audit` (admin): the audit log's database copy (SPEC O5), newest first. It
//! tells of every domain, so a key limited to some domains cannot read it.

use actix_web::{get, web};
use chrono::{DateTime, FixedOffset, Utc};
use mairust_actors::apikeys::Scope;
use mairust_actors::supervisor::Handles;
use mairust_entities::audit_entry;
use sea_orm::query::Order;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Page, PageQuery};
use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: i64,
    pub timestamp: DateTime<Utc>,
    /// The node that recorded it.
    pub node: String,
    /// e.g. `auth.login`, `auth.api_key`, `api_key.create`, `user.change`, `hook.delete`.
    pub event: String,
    /// success or failure.
    pub outcome: String,
    /// `api-key:NAME#ID`, `cli:USER`, `smtp:ADDRESS`, `api:anonymous` or `janitor` (the
    /// node's own housekeeping).
    pub actor: String,
    /// The client's IP address, when there was a client.
    pub remote: Option<String>,
    /// What was acted on: a domain, an address, a key id, a hook id.
    pub target: Option<String>,
    /// The rest, as an object.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<audit_entry::Model> for AuditEntryView {
    fn from(e: audit_entry::Model) -> Self {
        AuditEntryView {
            id: e.id,
            timestamp: e.at.to_utc(),
            node: e.node,
            event: e.event,
            outcome: e.outcome,
            actor: e.actor,
            remote: e.remote,
            target: e.target,
            details: serde_json::from_str(&e.details)
                .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only this event, e.g. `auth.login`.
    pub event: Option<String>,
    /// Only `success` or `failure`.
    pub outcome: Option<String>,
    /// Only this actor, exactly as listed.
    pub actor: Option<String>,
    /// Only entries about this target.
    pub target: Option<String>,
    /// At or after this time (RFC 3339).
    pub after: Option<DateTime<FixedOffset>>,
    /// Before this time (RFC 3339).
    pub before: Option<DateTime<FixedOffset>>,
}

/// Read the audit log, newest first.
#[utoipa::path(
    tag = "audit",
    params(PageQuery, AuditFilter),
    responses(
        (status = 200, description = "A page of audit entries", body = Page<AuditEntryView>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 422, description = "Invalid limit, cursor or outcome", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[get("/audit")]
pub async fn list(
    auth: Authenticated,
    handles: web::Data<Handles>,
    page: web::Query<PageQuery>,
    filter: web::Query<AuditFilter>,
) -> Result<web::Json<Page<AuditEntryView>>, ApiError> {
    auth.require_global(Scope::Admin)?;
    let page = page.keyset()?;
    let mut select = audit_entry::Entity::find();
    let AuditFilter {
        event,
        outcome,
        actor,
        target,
        after,
        before,
    } = filter.into_inner();
    if let Some(outcome) = &outcome
        && !matches!(outcome.as_str(), "success" | "failure")
    {
        return Err(ApiError::field("outcome", "must be success or failure"));
    }
    for (column, value) in [
        (audit_entry::Column::Event, event),
        (audit_entry::Column::Outcome, outcome),
        (audit_entry::Column::Actor, actor),
        (audit_entry::Column::Target, target),
    ] {
        if let Some(value) = value {
            select = select.filter(column.eq(value));
        }
    }
    if let Some(after) = after {
        select = select.filter(audit_entry::Column::At.gte(after.to_utc().fixed_offset()));
    }
    if let Some(before) = before {
        select = select.filter(audit_entry::Column::At.lt(before.to_utc().fixed_offset()));
    }
    let id = audit_entry::Column::Id;
    let found = page.fetch(
        &handles.db,
        select,
        id,
        Order::Desc,
        |e: &AuditEntryView| e.id,
    );
    Ok(web::Json(found.await?))
}
