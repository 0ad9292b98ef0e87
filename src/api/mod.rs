//! The HTTP server (actix-web): health endpoints, `/metrics` (Prometheus text format,
//! SPEC O1) and the REST API under `/api/v1` with its OpenAPI document.
//!
//! - [`health`] — /health, /health/live, /health/ready
//! - [`v1`] — the REST API (SPEC A1–A6)
//! - [`auth`] — API keys, scopes and domain limits, failed-auth rate limiting
//! - [`client_address`] — the client behind trusted reverse proxies
//! - [`error`] — the one error body (SPEC A3)
//! - [`ui`] — the Admin UI (`/admin`) and Swagger UI (`/api/v1/docs`), built in

pub mod auth;
pub mod client_address;
pub mod error;
pub mod health;
pub mod ui;
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

/// The HTTP server on `http.address`, with HTTPS when `certs` (from `http.tls`) is given.
pub fn server(
    handles: Handles,
    limiter: std::sync::Arc<auth::AuthLimiter>,
    certs: Option<&std::sync::Arc<mairust_actors::certs::CertStore>>,
) -> std::io::Result<(actix_web::dev::Server, Vec<std::net::SocketAddr>)> {
    let config = handles.config.clone();
    let data = web::Data::new(handles);
    let limiter = web::Data::from(limiter);
    let clients = web::Data::new(
        client_address::ClientAddress::from_config(&config.api).map_err(std::io::Error::other)?,
    );
    let document = web::Data::new(serde_json::to_vec(&openapi()).map_err(std::io::Error::other)?);
    let cors_config = config.api.cors.clone();
    let metrics_on = config.telemetry.metrics.enabled;
    let server = HttpServer::new(move || {
        // The last wrap is the outermost: the request span (W3C traceparent picked up)
        // encloses the access log line and request metrics, which see CORS answers too.
        let (app, _) = App::new()
            .wrap(cors(&cors_config))
            .wrap(actix_web::middleware::from_fn(access_log))
            .wrap(tracing_actix_web::TracingLogger::default())
            .app_data(data.clone())
            .app_data(limiter.clone())
            .app_data(clients.clone())
            .app_data(document.clone())
            .app_data(web::Data::new(CountRequests(metrics_on)))
            .configure(error::configure_extractors)
            .configure(health::routes)
            .configure(ui::admin_routes)
            .configure(|cfg| {
                if metrics_on {
                    cfg.route("/metrics", web::get().to(metrics_text));
                }
            })
            .into_utoipa_app()
            .openapi(v1::ApiDoc::openapi())
            .service(
                utoipa_actix_web::scope("/api/v1")
                    .configure(v1::routes)
                    .route("/openapi.json", web::get().to(openapi_json))
                    .route("/docs", web::get().to(ui::docs_root))
                    .route("/docs/{file:.*}", web::get().to(ui::docs_file))
                    .default_service(web::to(not_found)),
            )
            .split_for_parts();
        app.default_service(web::to(not_found))
    })
    .workers(config.http.workers.max(1))
    // actix counts per worker.
    .max_connections(
        config
            .http
            .max_connections
            .div_ceil(config.http.workers.max(1)),
    )
    // The ShutdownCoordinator owns the signals; `serve` stops this server itself.
    .disable_signals()
    .shutdown_timeout(5);
    let server = match certs {
        Some(certs) => {
            let mut tls = certs.server_config();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            server.bind_rustls_0_23(&config.http.address, tls)?
        }
        None => server.bind(&config.http.address)?,
    };
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

/// `GET /metrics`: the process registry in the Prometheus text format (SPEC O1).
async fn metrics_text(handles: web::Data<Handles>) -> HttpResponse {
    use prometheus::Encoder;
    handles.limits.report_data_bytes();
    mairust_actors::metrics::metrics().process.refresh();
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(
        &mairust_actors::metrics::metrics().registry.gather(),
        &mut body,
    ) {
        Ok(()) => HttpResponse::Ok()
            .content_type(encoder.format_type())
            .body(body),
        Err(e) => {
            tracing::error!(component = "api", error = %e, "metrics encoding failed");
            HttpResponse::InternalServerError().finish()
        }
    }
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

/// Whether [`access_log`] counts requests in the metrics (`telemetry.metrics.enabled`).
struct CountRequests(bool);

/// One log line per request, inside its span (so it carries `request_id`), the request
/// id in an `X-Request-Id` answer header, and the request in `mairust_api_requests_total`
/// and `mairust_api_duration_seconds` (scrapes of `/metrics` are neither logged nor
/// counted).
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
    let count = req
        .app_data::<web::Data<CountRequests>>()
        .is_some_and(|c| c.0);
    let mut res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "UNMATCHED".into());
    let status = res.status().as_u16();
    let took = started.elapsed();
    let ms = took.as_secs_f64() * 1000.0;
    if route != "/metrics" {
        if count {
            mairust_actors::metrics::metrics().api_request(&route, &method, status, took);
        }
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
