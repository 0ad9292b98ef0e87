//! The HTTP server (actix-web): health endpoints, `/metrics` (Prometheus text format,
//! SPEC O1) and the REST API under `/api/v1` with its OpenAPI document.
//!
//! - [`health`] — /health, /health/live, /health/ready
//! - [`v1`] — the REST API (SPEC A1–A6)
//! - [`auth`] — API keys and scopes, failed-auth rate limiting
//! - [`error`] — the one error body (SPEC A3)

pub mod auth;
pub mod error;
pub mod health;
pub mod v1;

use actix_web::{App, HttpResponse, HttpServer, web};
use mairust_actors::supervisor::Handles;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

/// The OpenAPI document of `/api/v1`, collected from the registered routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = App::new()
        .into_utoipa_app()
        .openapi(v1::ApiDoc::openapi())
        .service(utoipa_actix_web::scope("/api/v1").configure(v1::routes))
        .split_for_parts();
    api
}

pub fn server(
    handles: Handles,
    limiter: std::sync::Arc<auth::AuthLimiter>,
) -> std::io::Result<(actix_web::dev::Server, Vec<std::net::SocketAddr>)> {
    let config = handles.config.clone();
    let data = web::Data::new(handles);
    let limiter = web::Data::from(limiter);
    let document = web::Data::new(serde_json::to_vec(&openapi()).map_err(std::io::Error::other)?);
    let cors_config = config.api.cors.clone();
    let prometheus = prometheus_middleware().map_err(std::io::Error::other)?;
    let metrics_on = config.telemetry.metrics.enabled;
    let server = HttpServer::new(move || {
        // The last wrap is the outermost: the request span (W3C traceparent picked up)
        // encloses the metrics, CORS and the access log line.
        let (app, _) = App::new()
            .wrap(actix_web::middleware::from_fn(access_log))
            .wrap(cors(&cors_config))
            .wrap(actix_web::middleware::Condition::new(
                metrics_on,
                prometheus.clone(),
            ))
            .wrap(tracing_actix_web::TracingLogger::default())
            .app_data(data.clone())
            .app_data(limiter.clone())
            .app_data(document.clone())
            .configure(error::configure_extractors)
            .configure(health::routes)
            .into_utoipa_app()
            .openapi(v1::ApiDoc::openapi())
            .service(
                utoipa_actix_web::scope("/api/v1")
                    .configure(v1::routes)
                    .route("/openapi.json", web::get().to(openapi_json))
                    .default_service(web::to(not_found)),
            )
            .split_for_parts();
        app.default_service(web::to(not_found))
    })
    .workers(config.http.workers.max(1))
    // The ShutdownCoordinator owns the signals; `serve` stops this server itself.
    .disable_signals()
    .shutdown_timeout(5)
    .bind(&config.http.address)?;
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

/// `mairust_api_requests_total` and `mairust_api_duration_seconds` by route pattern
/// (`/api/v1/messages/{id}`; `UNMATCHED` for paths no route knows, so scanners cannot
/// blow up the label set), method and status code; and `GET /metrics` serving the
/// process registry. Scrapes themselves are not counted.
fn prometheus_middleware()
-> Result<actix_web_prom::PrometheusMetrics, Box<dyn std::error::Error + Send + Sync>> {
    use actix_web_prom::{
        ActixMetricsConfiguration, LabelsConfiguration, PrometheusMetricsBuilder,
    };
    PrometheusMetricsBuilder::new("mairust")
        .registry(mairust_actors::metrics::metrics().registry.clone())
        .endpoint("/metrics")
        .exclude("/metrics")
        .mask_unmatched_patterns("UNMATCHED")
        .buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .metrics_configuration(
            ActixMetricsConfiguration::default()
                .http_requests_total_name("api_requests_total")
                .http_requests_duration_seconds_name("api_duration_seconds")
                .labels(LabelsConfiguration::default().endpoint("route")),
        )
        .build()
}

/// CORS for the configured Admin UI origins; with none, browsers get no CORS headers.
fn cors(config: &mairust_actors::config::CorsConfig) -> actix_cors::Cors {
    use actix_web::http::header;
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers(["Deprecation", "Sunset", "Link", "X-Request-Id"])
        .max_age(config.max_age_seconds as usize)
        // Other origins simply get no CORS headers (the browser then refuses); clients
        // that are not browsers are not affected.
        .block_on_origin_mismatch(false);
    for origin in &config.allowed_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// One log line per request, inside its span (so it carries `request_id`), and the
/// request id in an `X-Request-Id` answer header.
async fn access_log(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    let started = std::time::Instant::now();
    let request_id = req
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string());
    let method = req.method().to_string();
    let mut res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "UNMATCHED".into());
    let status = res.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if route != "/metrics" {
        tracing::info!(component = "api", event = "request", method = %method, route = %route, status, duration_ms = ms, "request");
    }
    if let Some(id) = request_id
        && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id)
    {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            value,
        );
    }
    Ok(res)
}

async fn openapi_json(document: web::Data<Vec<u8>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.get_ref().clone())
}

async fn not_found() -> Result<HttpResponse, error::ApiError> {
    Err(error::ApiError::not_found("no such route"))
}
