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

use actix_web::{HttpResponse, web};
use mairust_actors::health_state::Dependency;
use mairust_actors::supervisor::Handles;
use serde_json::json;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

fn report(handles: &Handles) -> (bool, serde_json::Value) {
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
