//! Health endpoints (SPEC O12, seed §8).
//!
//! - `/health/live`: the process answers (no dependency checked).
//! - `/health/ready`: 200 while the database and the object store answer and every
//!   child of the actor tree runs, else 503; 503 (status `draining`) from the moment a
//!   graceful shutdown begins, so load balancers stop sending new connections.
//! - `/health`: the same report as ready, always 200, for humans and dashboards.
//!
//! The queue check gives the queue length and the oldest entry's age as of the last
//! database probe.
//!
//! Status: `unhealthy` when the database is down (nothing works) or a child of the
//! actor tree spent its restart budget (named under `checks.actors.failed`), `degraded`
//! when only the object store is down (metadata still readable, new mail tempfails),
//! else `healthy`. The values are the HealthMonitor's latest probes, so these handlers never
//! wait on a dead dependency.
//!
//! Each node also writes its report to `node_status` every [`NODE_REPORT_EVERY`]
//! ([`publish`]), so the Admin UI's dashboard shows every node sharing the database.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use mairust_actors::health_state::Dependency;
use mairust_actors::supervisor::Handles;
use mairust_entities::node_status;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;

/// How often a node writes its report to `node_status`.
pub const NODE_REPORT_EVERY: Duration = Duration::from_secs(10);
/// A node's report older than this is shown as stale (the node stopped or lost the
/// database); older than a day it is removed.
pub const NODE_REPORT_STALE: Duration = Duration::from_secs(35);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

pub fn report(handles: &Handles) -> (bool, serde_json::Value) {
    let db = handles.health.get(Dependency::Database);
    let storage = handles.health.get(Dependency::Storage);
    let queue = handles.health.queue();
    let word = |up: bool| if up { "healthy" } else { "unhealthy" };
    // Children of the actor tree that spent their restart budget (a queue worker, a
    // listener, the storage actor...): this node no longer does all its work.
    let failed = handles.health.failed_children();
    let leaving = handles.health.leaving();
    let schema = handles.health.schema_problem();
    let status = match (db.up && schema.is_none(), storage.up, failed.is_empty()) {
        (true, true, true) if leaving => "draining",
        (true, true, true) => "healthy",
        (true, false, true) => "degraded",
        _ => "unhealthy",
    };
    let (stored, limit) = handles.health.storage();
    let listeners: serde_json::Map<String, serde_json::Value> = handles
        .listeners
        .iter()
        .map(|(name, addr)| (name.to_string(), addr.to_string().into()))
        .collect();
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "node": handles.node_id,
        "uptime_seconds": handles.health.uptime_seconds(),
        "listeners": listeners,
        "checks": {
            "database": {
                "status": word(db.up && schema.is_none()),
                "latency_ms": db.latency_ms,
                "schema": schema.as_deref().unwrap_or("compatible"),
            },
            "storage": {
                "status": word(storage.up),
                "latency_ms": storage.latency_ms,
                "bytes": stored,
                "limit_bytes": limit,
            },
            "queue": {
                // Workers pause while the database is down.
                "status": word(db.up),
                "length": queue.length,
                "oldest_age_seconds": queue.oldest_age_seconds,
                "workers": handles.config.queue.workers,
            },
            "smtp": {
                "status": if handles.health.accepting_mail() { "healthy" } else { "unhealthy" },
                "sessions": handles.sessions.active(),
                "draining": leaving,
            },
            "actors": {
                "status": word(failed.is_empty()),
                "failed": failed,
            },
        }
    });
    let ready = db.up && schema.is_none() && storage.up && failed.is_empty() && !leaving;
    (ready, body)
}

async fn health(handles: web::Data<Handles>) -> HttpResponse {
    HttpResponse::Ok().json(report(&handles).1)
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "healthy"}))
}

async fn ready(handles: web::Data<Handles>) -> HttpResponse {
    match report(&handles) {
        (true, body) => HttpResponse::Ok().json(body),
        (false, body) => HttpResponse::ServiceUnavailable().json(body),
    }
}

/// Writes this node's report to `node_status` every [`NODE_REPORT_EVERY`] while the
/// database is up, and removes reports of nodes gone for a day (PostgreSQL, where
/// nodes share the database). Runs for the life of
/// the process.
pub async fn publish(handles: Handles) {
    // SQLite serves one node (its file is not shared): /nodes reads this process's
    // report live, and writing it would only compete with the CLI's writes.
    if handles.db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        return;
    }
    let started = Utc::now();
    let mut tick = tokio::time::interval(NODE_REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Stopping: `withdraw` removes the report; none may come back after it.
        if handles.health.leaving() {
            return;
        }
        if !handles.health.get(Dependency::Database).up {
            continue;
        }
        if let Err(e) = write_report(&handles, started).await {
            tracing::debug!(component = "api", error = %e, "node report not written");
        }
    }
}

/// Removes this node's report at a clean stop (a new start is a new node id), so the
/// dashboard lists only nodes that run or stopped without saying so.
pub async fn withdraw(handles: &Handles) {
    let gone = node_status::Entity::delete_by_id(handles.node_id.clone())
        .exec(&handles.db)
        .await;
    if let Err(e) = gone {
        tracing::debug!(component = "api", error = %e, "node report not removed");
    }
}

async fn write_report(handles: &Handles, started: DateTime<Utc>) -> Result<(), sea_orm::DbErr> {
    let now = Utc::now();
    let row = node_status::ActiveModel {
        node_id: Set(handles.node_id.clone()),
        hostname: Set(handles.config.server.hostname.clone()),
        version: Set(env!("CARGO_PKG_VERSION").to_string()),
        started_at: Set(started.fixed_offset()),
        updated_at: Set(now.fixed_offset()),
        report: Set(report(handles).1.to_string()),
    };
    node_status::Entity::insert(row)
        .on_conflict(
            OnConflict::column(node_status::Column::NodeId)
                .update_columns([
                    node_status::Column::Hostname,
                    node_status::Column::Version,
                    node_status::Column::StartedAt,
                    node_status::Column::UpdatedAt,
                    node_status::Column::Report,
                ])
                .to_owned(),
        )
        .exec(&handles.db)
        .await?;
    node_status::Entity::delete_many()
        .filter(node_status::Column::UpdatedAt.lt((now - chrono::Duration::days(1)).fixed_offset()))
        .exec(&handles.db)
        .await?;
    Ok(())
}
