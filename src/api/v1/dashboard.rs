//! What the Admin UI's dashboard shows: every node's health (`/nodes`: this node's live,
//! the others' from the reports they write to `node_status` on PostgreSQL) and the server's recent figures (`/stats`: mail
//! received, delivered and bounced per hour, the queue, storage). Both concern the
//! whole server: a key of every domain (or an admin's session).

use actix_web::{get, web};
use chrono::{DateTime, Duration, DurationRound, Utc};
use mairust_actors::apikeys::Scope;
use mairust_actors::supervisor::Handles;
use mairust_entities::{message, node_status, queue_history};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityName, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody};
use crate::api::health::NODE_REPORT_STALE;

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub node_id: String,
    pub hostname: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    /// When the node last wrote its report (every 10 s while it runs and reaches the
    /// database).
    pub updated_at: DateTime<Utc>,
    /// No report for 35 s: the node stopped, or lost the database.
    pub stale: bool,
    /// The report's `status`: healthy, degraded, draining or unhealthy.
    pub status: String,
    /// Whether the node was ready (`/health/ready` 200) at its last report.
    pub ready: bool,
    /// The node's `/health` checks (database, storage, queue, smtp, actors), each with
    /// `up` (its status is healthy) and `detail` (its figures in one line) added.
    #[schema(value_type = Object)]
    pub checks: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    pub data: Vec<NodeView>,
}

/// Every node sharing the database, with its latest health report (nodes gone for a
/// day are left out).
#[utoipa::path(
    tag = "dashboard",
    responses(
        (status = 200, description = "The nodes", body = NodeList),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/nodes")]
pub async fn nodes(
    auth: Authenticated,
    handles: web::Data<Handles>,
) -> Result<web::Json<NodeList>, ApiError> {
    auth.require_global(Scope::Read)?;
    let rows = node_status::Entity::find()
        .filter(node_status::Column::NodeId.ne(handles.node_id.as_str()))
        .order_by_asc(node_status::Column::NodeId)
        .limit(1000)
        .all(&handles.db)
        .await?;
    let now = Utc::now();
    // This node's own report is read live (on SQLite, one node by design, it is the only
    // one: nothing is written there).
    let uptime = Duration::seconds(handles.health.uptime_seconds() as i64);
    let mut data = vec![view(
        NodeReport {
            node_id: handles.node_id.clone(),
            hostname: handles.config.server.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: now - uptime,
            updated_at: now,
            report: crate::api::health::report(&handles).1,
        },
        now,
    )];
    data.extend(rows.into_iter().map(|row| {
        view(
            NodeReport {
                report: serde_json::from_str(&row.report).unwrap_or_default(),
                node_id: row.node_id,
                hostname: row.hostname,
                version: row.version,
                started_at: row.started_at.to_utc(),
                updated_at: row.updated_at.to_utc(),
            },
            now,
        )
    }));
    Ok(web::Json(NodeList { data }))
}

/// A node's report, from this process or from `node_status`.
struct NodeReport {
    node_id: String,
    hostname: String,
    version: String,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    report: serde_json::Value,
}

fn view(node: NodeReport, now: DateTime<Utc>) -> NodeView {
    let stale_after = Duration::from_std(NODE_REPORT_STALE).unwrap_or(Duration::seconds(35));
    let status = node.report["status"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    NodeView {
        stale: now - node.updated_at > stale_after,
        ready: status == "healthy",
        status,
        checks: with_summaries(&node.report["checks"]),
        node_id: node.node_id,
        hostname: node.hostname,
        version: node.version,
        started_at: node.started_at,
        updated_at: node.updated_at,
    }
}

/// Each check of a report with `up` and a one-line `detail` of its other fields.
fn with_summaries(checks: &serde_json::Value) -> serde_json::Value {
    let Some(checks) = checks.as_object() else {
        return serde_json::Value::Object(Default::default());
    };
    let mut out = serde_json::Map::new();
    for (name, check) in checks {
        let mut check = check.as_object().cloned().unwrap_or_default();
        let up = check.get("status").and_then(|s| s.as_str()) == Some("healthy");
        let detail = check
            .iter()
            .filter(|(k, _)| *k != "status")
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k} {s}"),
                other => format!("{k} {other}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        check.insert("up".into(), up.into());
        check.insert("detail".into(), detail.into());
        out.insert(name.clone(), serde_json::Value::Object(check));
    }
    serde_json::Value::Object(out)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Hours back from now, 1 to 168 (default 24).
    #[param(minimum = 1, maximum = 168)]
    pub hours: Option<u32>,
}

/// One hour's mail.
#[derive(Debug, Serialize, ToSchema)]
pub struct HourStats {
    /// The hour's start (UTC).
    pub start: DateTime<Utc>,
    /// Messages stored (from other servers and from our users).
    pub received: i64,
    /// Recipients delivered to other servers.
    pub delivered: i64,
    /// Recipients bounced or expired.
    pub bounced: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueFigures {
    pub length: u64,
    /// Age of the oldest entry; null when the queue is empty.
    pub oldest_age_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StorageFigures {
    pub messages: u64,
    /// Bytes of stored bodies (summed every few minutes by the health probe).
    pub bytes: u64,
    /// `storage.limit_bytes`; 0 for none.
    pub limit_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Oldest first, the current hour last.
    pub hours: Vec<HourStats>,
    pub queue: QueueFigures,
    pub storage: StorageFigures,
}

/// Mail received, delivered and bounced per hour, the queue and storage.
#[utoipa::path(
    tag = "dashboard",
    params(StatsQuery),
    responses(
        (status = 200, description = "The figures", body = Stats),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 422, description = "hours out of range", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/stats")]
pub async fn stats(
    auth: Authenticated,
    handles: web::Data<Handles>,
    query: web::Query<StatsQuery>,
) -> Result<web::Json<Stats>, ApiError> {
    auth.require_global(Scope::Read)?;
    let hours = query.hours.unwrap_or(24);
    if !(1..=168).contains(&hours) {
        return Err(ApiError::field("hours", "must be between 1 and 168"));
    }
    let now = Utc::now();
    let current = now
        .duration_trunc(Duration::hours(1))
        .map_err(|e| ApiError::new(crate::api::error::ErrorCode::InternalError, e.to_string()))?;
    let starts: Vec<DateTime<Utc>> = (0..i64::from(hours))
        .rev()
        .map(|back| current - Duration::hours(back))
        .collect();
    let db = &handles.db;
    let received = per_hour(
        db,
        message::Entity.table_name(),
        "received_at",
        None,
        &starts,
    )
    .await?;
    let delivered = per_hour(
        db,
        queue_history::Entity.table_name(),
        "at",
        Some(&["delivered"]),
        &starts,
    )
    .await?;
    let bounced = per_hour(
        db,
        queue_history::Entity.table_name(),
        "at",
        Some(&["bounced", "expired"]),
        &starts,
    )
    .await?;
    let queue = handles.health.queue();
    let (bytes, limit_bytes) = handles.health.storage();
    let messages = message::Entity::find().count(db).await?;
    Ok(web::Json(Stats {
        hours: starts
            .iter()
            .enumerate()
            .map(|(i, start)| HourStats {
                start: *start,
                received: received[i],
                delivered: delivered[i],
                bounced: bounced[i],
            })
            .collect(),
        queue: QueueFigures {
            length: queue.length,
            oldest_age_seconds: queue.oldest_age_seconds,
        },
        storage: StorageFigures {
            messages,
            bytes,
            limit_bytes,
        },
    }))
}

/// Rows of `table` per hour starting at each of `starts` (by the time column `at`),
/// counted in one query; with `outcomes`, only rows whose `outcome` is one of them.
async fn per_hour(
    db: &impl ConnectionTrait,
    table: &str,
    at: &str,
    outcomes: Option<&[&str]>,
    starts: &[DateTime<Utc>],
) -> Result<Vec<i64>, ApiError> {
    let column = || Expr::col(Alias::new(at));
    let mut q = Query::select();
    for (i, start) in starts.iter().enumerate() {
        let end = *start + Duration::hours(1);
        let within = column()
            .gte(start.fixed_offset())
            .and(column().lt(end.fixed_offset()));
        q.expr_as(
            Expr::case(within, 1).finally(0).sum(),
            Alias::new(format!("h{i}")),
        );
    }
    q.from(Alias::new(table));
    if let Some(first) = starts.first() {
        q.and_where(column().gte(first.fixed_offset()));
    }
    if let Some(outcomes) = outcomes {
        q.and_where(Expr::col(Alias::new("outcome")).is_in(outcomes.iter().copied()));
    }
    let row = db.query_one(&q).await?;
    let mut counts = Vec::with_capacity(starts.len());
    for i in 0..starts.len() {
        let n: Option<i64> = match &row {
            Some(row) => row.try_get("", &format!("h{i}"))?,
            None => None,
        };
        counts.push(n.unwrap_or(0));
    }
    Ok(counts)
}
