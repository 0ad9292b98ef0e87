//! `/api/v1/session`: people signing in with their mail address and password (the Admin
//! UI). The password check is SMTP AUTH's ([`SignIn`]): the same lockouts per address
//! and per account, the same bound on password work, the same audit entries. A
//! session lives server-side (`web_sessions`); the browser holds only its token, in an
//! HttpOnly, SameSite=Strict cookie (Secure over HTTPS). The answer gives the session's
//! CSRF token, which the page sends back in `X-CSRF-Token` with every change.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use mairust_actors::audit::Entry;
use mairust_actors::health_state::Dependency;
use mairust_actors::signin::{Channel, Checked, SignIn};
use mairust_actors::supervisor::Handles;
use mairust_actors::websessions;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::auth::{self, Authenticated};
use crate::api::error::{ApiError, AuthErrors, ErrorBody, ErrorCode};

/// Longest password taken (its hash costs the same whatever its length, but reading
/// and hashing a megabyte of it does not).
const MAX_PASSWORD: usize = 1024;
/// Longest address taken (RFC 5321's path limit).
const MAX_ADDRESS: usize = 256;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The user's mail address.
    pub address: String,
    pub password: String,
}

/// The caller's session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The signed-in user's address.
    pub user: String,
    /// Whether the user manages the server (else the session reaches the user's own
    /// mail only).
    pub admin: bool,
    /// Send back in `X-CSRF-Token` with every request that changes something.
    pub csrf_token: String,
    /// When the session ends however much it is used.
    pub expires_at: DateTime<Utc>,
    /// A session unused this long ends sooner.
    pub idle_timeout_seconds: u64,
}

fn view(handles: &Handles, session: &auth::WebSession) -> SessionView {
    SessionView {
        user: session.address.clone(),
        admin: session.admin,
        csrf_token: websessions::csrf_of(&session.token),
        expires_at: session.expires_at,
        idle_timeout_seconds: handles.config.api.sessions.idle_timeout_seconds,
    }
}

/// The `Set-Cookie` value carrying `token` for `max_age` seconds (0: removes it):
/// `__Host-mairust_session` with `Secure` over HTTPS.
fn cookie(handles: &Handles, req: &HttpRequest, token: &str, max_age: u64) -> String {
    let secure = auth::over_https(handles, req);
    format!(
        "{}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        auth::cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

/// Sign in with a mail address and password.
#[utoipa::path(
    tag = "session",
    request_body = Credentials,
    responses(
        (status = 201, description = "Signed in; the session cookie is set", body = SessionView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 401, description = "Wrong address or password, or the user is disabled", body = ErrorBody),
        (status = 403, description = "Sent by a page of another site", body = ErrorBody),
        (status = 422, description = "Address or password too long", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins from this address or for this account", body = ErrorBody),
        (status = 503, description = "The database is unavailable, or too many password checks at once", body = ErrorBody)
    ),
    security(())
)]
#[post("/session")]
pub async fn sign_in(
    req: HttpRequest,
    handles: web::Data<Handles>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let remote = auth::client_ip(&req);
    // A page of another site must not sign the browser in to an account of its choice.
    if auth::foreign_origin(&req).is_some() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "sign-in from a page of another site refused",
        ));
    }
    let Credentials { address, password } = body.into_inner();
    if address.len() > MAX_ADDRESS {
        return Err(ApiError::field("address", "too long"));
    }
    if password.len() > MAX_PASSWORD {
        return Err(ApiError::field(
            "password",
            format!("longer than {MAX_PASSWORD} bytes"),
        ));
    }
    if !handles.health.get(Dependency::Database).up {
        return Err(ApiError::unavailable());
    }
    let decorate = |entry: Entry| entry;
    let checked = SignIn {
        limits: &handles.limits,
        pipeline: &handles.pipeline,
        audit: &handles.audit,
        lockout_seconds: handles.config.auth.lockout_seconds,
        channel: Channel::Web,
        remote,
        decorate: &decorate,
        session_id: "",
    }
    .check(&address, password)
    .await;
    let user = match checked {
        Checked::Verified(user) => user,
        Checked::Locked => {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many failed sign-ins from this address or for this account; try again later",
            ));
        }
        Checked::Busy => {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "too many sign-ins at once; try again in a moment",
            ));
        }
        Checked::Unavailable => return Err(ApiError::unavailable()),
        Checked::Refused => {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "wrong address or password",
            ));
        }
    };
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let config = &handles.config.api.sessions;
    // The session this browser held, if any, ends: one browser, one session.
    if let Some(old) = auth::session_cookie(&req, auth::over_https(&handles, &req)) {
        websessions::end_token(&handles.db, &old).await?;
    }
    let new =
        websessions::create(&handles.db, config, &user, &remote.to_string(), user_agent).await?;
    let session = auth::WebSession {
        id: new.record.id,
        user_id: user.id,
        address: user.address.clone(),
        admin: user.admin,
        token: new.token,
        expires_at: new.record.expires_at.to_utc(),
    };
    let set_cookie = cookie(&handles, &req, &session.token, config.lifetime_seconds);
    Ok(HttpResponse::Created()
        .insert_header((header::SET_COOKIE, set_cookie))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view(&handles, &session)))
}

/// The session this request was made with (to learn its CSRF token after a reload).
#[utoipa::path(
    tag = "session",
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 404, description = "The request used an API key, not a session", body = ErrorBody),
        AuthErrors
    ),
    security(("session" = []))
)]
#[get("/session")]
pub async fn get(
    auth: Authenticated,
    handles: web::Data<Handles>,
) -> Result<HttpResponse, ApiError> {
    let session = own_session(&auth)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view(&handles, session)))
}

fn own_session(auth: &Authenticated) -> Result<&auth::WebSession, ApiError> {
    auth.session.as_ref().ok_or_else(|| {
        ApiError::not_found("this request carries no session (it was made with an API key)")
    })
}

/// Sign out: ends this session.
#[utoipa::path(
    tag = "session",
    responses(
        (status = 204, description = "Signed out; the cookie is removed"),
        (status = 404, description = "The request used an API key, not a session", body = ErrorBody),
        AuthErrors
    ),
    security(("session" = []))
)]
#[delete("/session")]
pub async fn sign_out(
    req: HttpRequest,
    auth: Authenticated,
    handles: web::Data<Handles>,
) -> Result<HttpResponse, ApiError> {
    let session = own_session(&auth)?;
    websessions::end(&handles.db, session.id).await?;
    handles.audit.record(auth.did("auth.logout")).await;
    Ok(HttpResponse::NoContent()
        .insert_header((header::SET_COOKIE, cookie(&handles, &req, "", 0)))
        .finish())
}

/// Sign out everywhere: ends every session of the signed-in user.
#[utoipa::path(
    tag = "session",
    responses(
        (status = 204, description = "Every session of the user ended; the cookie is removed"),
        (status = 404, description = "The request used an API key, not a session", body = ErrorBody),
        AuthErrors
    ),
    security(("session" = []))
)]
#[delete("/sessions")]
pub async fn sign_out_everywhere(
    req: HttpRequest,
    auth: Authenticated,
    handles: web::Data<Handles>,
) -> Result<HttpResponse, ApiError> {
    let session = own_session(&auth)?;
    let ended = websessions::end_all_of(&handles.db, session.user_id).await?;
    handles
        .audit
        .record(auth.did("auth.logout_everywhere").detail("sessions", ended))
        .await;
    Ok(HttpResponse::NoContent()
        .insert_header((header::SET_COOKIE, cookie(&handles, &req, "", 0)))
        .finish())
}
