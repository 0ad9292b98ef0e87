//! The API's one error shape (SPEC A3):
//! `{"error":{"code":"NOT_FOUND","message":"...","details":...}}`, and the handlers
//! that turn actix-web's own extractor failures into it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;
use utoipa::ToSchema;

/// Error codes and their HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    ValidationError,
    RateLimited,
    InternalError,
    Unavailable,
}

impl ErrorCode {
    fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// Which fields were wrong (VALIDATION_ERROR about named fields); else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The body, query or path field.
    pub field: String,
    pub message: String,
}

/// The answers every authenticated route may give besides its own (for OpenAPI).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AuthErrors {
    /// No or invalid API key.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The key lacks the scope this route needs, or is limited to some domains and the
    /// request needs a key of every domain (or of another domain, for POST /send).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Too many failed authentications from this address.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The database is unavailable.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Vec<FieldError>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 422 with one field error.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            code: ErrorCode::ValidationError,
            details: Some(vec![FieldError {
                field: field.to_string(),
                message: message.clone(),
            }]),
            message: format!("{field}: {message}"),
        }
    }

    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "the database is unavailable; try again shortly",
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if self.code == ErrorCode::Unauthorized {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                details: self.details.clone(),
            },
        })
    }
}

/// A database error inside a handler: 503 when the connection is the problem, else 500
/// (logged, the message stays generic).
impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        use sea_orm::DbErr;
        match &e {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => ApiError::unavailable(),
            _ => {
                tracing::error!(component = "api", error = %e, "database error");
                ApiError::new(ErrorCode::InternalError, "internal error")
            }
        }
    }
}

/// Body, query and path extractor failures in the API's error shape.
pub fn configure_extractors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(1024 * 1024).error_handler(
        |err, _req: &HttpRequest| {
            use actix_web::error::JsonPayloadError;
            let e = match &err {
                JsonPayloadError::Deserialize(d) if d.is_data() => {
                    ApiError::new(ErrorCode::ValidationError, d.to_string())
                }
                JsonPayloadError::ContentType => ApiError::new(
                    ErrorCode::InvalidRequest,
                    "the body must be JSON (Content-Type: application/json)",
                ),
                _ => ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("invalid JSON body: {err}"),
                ),
            };
            e.into()
        },
    ))
    .app_data(
        web::QueryConfig::default().error_handler(|err, _req: &HttpRequest| {
            ApiError::new(ErrorCode::InvalidRequest, format!("invalid query: {err}")).into()
        }),
    )
    .app_data(
        web::PathConfig::default().error_handler(|err, _req: &HttpRequest| {
            ApiError::new(ErrorCode::NotFound, format!("no such resource: {err}")).into()
        }),
    );
}
