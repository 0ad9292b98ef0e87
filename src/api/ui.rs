//! The Admin UI under `/admin` and Swagger UI under `/api/v1/docs`: files built into the
//! binary (`ui/`), nothing loaded from another site. Each is served with a
//! Content-Security-Policy that lets its page run only its own scripts and talk only
//! to this server: message HTML never enters the Admin UI's page (it is shown in a
//! sandboxed frame from `/api/v1/messages/{id}/html`, under a policy of its own), and a
//! script that got in anyway could load nothing and send nothing elsewhere.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// The Admin UI's policy: its own script and style only, the API only, frames only from
/// this server (the sandboxed message view), never framed itself.
const ADMIN_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// Swagger UI's: its bundle sets inline styles; it fetches the OpenAPI document and
/// calls the API.
const DOCS_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// One file of a UI: its name under the UI's path, content type and bytes.
type Asset = (&'static str, &'static str, &'static [u8]);

const ADMIN: &[Asset] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/admin/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/admin/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/admin/app.css"),
    ),
];

const DOCS: &[Asset] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/swagger/index.html"),
    ),
    (
        "swagger-init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/swagger/swagger-init.js"),
    ),
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/swagger/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/swagger/swagger-ui.css"),
    ),
];

/// `/admin/...`: registered on the app.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin", web::get().to(|| async { moved("/admin/") }))
        .route(
            "/admin/{file:.*}",
            web::get()
                .to(|file: web::Path<String>| async move { serve(ADMIN, ADMIN_POLICY, &file) }),
        );
}

/// `/api/v1/docs` (Swagger UI): served inside the API's scope.
pub async fn docs_root() -> HttpResponse {
    moved("/api/v1/docs/")
}

pub async fn docs_file(file: web::Path<String>) -> HttpResponse {
    serve(DOCS, DOCS_POLICY, &file)
}

fn moved(to: &str) -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, to))
        .finish()
}

fn serve(assets: &[Asset], policy: &'static str, file: &str) -> HttpResponse {
    let Some((_, content_type, bytes)) = assets.iter().find(|(name, _, _)| *name == file) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no such file");
    };
    HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, policy))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // Not no-referrer: under it browsers send `Origin: null` with the page's own
        // POSTs, which the API refuses as coming from another site.
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        // Built into the binary: a new version must be fetched after an upgrade.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(*bytes)
}
