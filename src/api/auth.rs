//! Who is calling (SPEC A2): the [`Authenticated`] extractor verifies a bearer API key,
//! or else the browser session cookie of a signed-in user (the Admin UI). It answers
//! 401 without or with a bad key or session, 429 to a bad one after too many failures
//! from one client address (a valid key is always served: behind a proxy or NAT, one
//! client's failures must not lock out the others), and 503 at once while the database
//! is down (SPEC A6). [`Authenticated::require`] turns a missing scope into 403, and
//! [`Authenticated::require_global`] refuses a key limited to some domains what concerns
//! the whole server.
//!
//! A session acts as its user: an admin user's as an admin key of every domain; a
//! normal user's has no scope at all, so every route refuses it (403) except those
//! that ask [`Authenticated::mail_reach`], which narrow what they read and change to
//! that user's own mailboxes. A request made with a session that changes anything
//! must carry the session's CSRF token in `X-CSRF-Token` (and, when the browser sends
//! `Origin`, come from this server's own origin): the cookie alone, which a forged
//! cross-site request may carry, is never enough.
//!
//! Keys limited to domains (SPEC S4) see other domains' objects as absent: a domain,
//! user, mailbox, message, queue entry or key of another domain is answered 404 exactly
//! as a missing one, and lists leave them out. What such a key may never do is 403.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use futures::future::LocalBoxFuture;
use mairust_actors::apikeys::{self, Caller, Scope};
use mairust_actors::audit::Entry;
use mairust_actors::health_state::Dependency;
use mairust_actors::supervisor::Handles;
use mairust_actors::websessions;
use tracing::Instrument;

use super::client_address::ClientAddress;
use super::error::{ApiError, ErrorCode};

const WINDOW: Duration = Duration::from_secs(60);

/// Counts failed authentications per client address (in memory, per node); after
/// `api.auth_failures_per_minute` in a minute, bad or missing keys from the address get
/// 429 until the minute ends. Valid keys are served all the same.
pub struct AuthLimiter {
    max_failures: std::sync::atomic::AtomicU32,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthLimiter {
    pub fn new(max_failures: u32) -> Self {
        AuthLimiter {
            max_failures: max_failures.into(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// A new `api.auth_failures_per_minute` (configuration reload).
    pub fn set_max_failures(&self, max_failures: u32) {
        self.max_failures
            .store(max_failures, std::sync::atomic::Ordering::Relaxed);
    }

    /// Seconds until the address may try again, when it is blocked.
    fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&ip) {
            Some((n, since))
                if *n >= self.max_failures.load(std::sync::atomic::Ordering::Relaxed)
                    && since.elapsed() < WINDOW =>
            {
                Some((WINDOW - since.elapsed()).as_secs().max(1))
            }
            _ => None,
        }
    }

    fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Forget old windows so the map cannot grow without bound.
        if map.len() > 10_000 {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// The name of the session cookie over plain HTTP.
pub const SESSION_COOKIE: &str = "mairust_session";
/// Its name over HTTPS: a `__Host-` cookie is Secure, for this host only and Path=/, so
/// a page of a sibling host (another.example.org) cannot plant one.
pub const SECURE_SESSION_COOKIE: &str = "__Host-mairust_session";

/// Whether the browser reached this server over HTTPS: `http.tls`, or a proxy ending
/// TLS that says so (`X-Forwarded-Proto`/`Forwarded`; a client that claims it for
/// itself only changes its own cookie's name and flags).
pub fn over_https(handles: &Handles, req: &HttpRequest) -> bool {
    handles.config.http.tls.is_some() || req.connection_info().scheme() == "https"
}

/// The session cookie's name for this request.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// The header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A signed-in user's browser session.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub id: i64,
    pub user_id: i64,
    pub address: String,
    pub admin: bool,
    /// The cookie's token (its CSRF token is derived from it).
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The verified caller of an API request.
pub struct Authenticated {
    pub caller: Caller,
    /// The client's address ([`ClientAddress`]: behind a trusted proxy, the one it
    /// forwarded for).
    pub remote: IpAddr,
    /// The session, when the caller is a signed-in user rather than an API key.
    pub session: Option<WebSession>,
}

/// What a route about mail may read and change: the domains of a key limited to some
/// (`None`: every domain), and for a normal user's session, that user only.
#[derive(Debug, Clone, Copy)]
pub struct MailReach<'a> {
    pub domains: Option<&'a std::collections::BTreeSet<String>>,
    pub user: Option<i64>,
}

impl Authenticated {
    /// 403 unless the key has `scope` (admin has all).
    pub fn require(&self, scope: Scope) -> Result<&Caller, ApiError> {
        if self.caller.has(scope) {
            Ok(&self.caller)
        } else if self.session.is_some() {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "this needs an administrator: a user's session reaches only the user's own mail",
            ))
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this API key lacks the `{scope}` scope"),
            ))
        }
    }

    /// What a route about mailboxes and messages reaches with `scope` (`read` or
    /// `write`): a normal user's session its own user's mail, a key or an admin's
    /// session what [`Authenticated::require`] allows.
    pub fn mail_reach(&self, scope: Scope) -> Result<MailReach<'_>, ApiError> {
        match &self.session {
            Some(s) if !s.admin && matches!(scope, Scope::Read | Scope::Write) => Ok(MailReach {
                domains: None,
                user: Some(s.user_id),
            }),
            _ => Ok(MailReach {
                domains: self.require(scope)?.domains.as_ref(),
                user: None,
            }),
        }
    }

    /// Whether the caller is the normal (not admin) user whose address is `address`.
    pub fn is_user(&self, address: &str) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.admin && s.address.eq_ignore_ascii_case(address.trim()))
    }

    /// 403 unless the key has `scope` and is a key of every domain: for what concerns
    /// the whole server (domains themselves, hooks, the audit log, queue figures).
    pub fn require_global(&self, scope: Scope) -> Result<&Caller, ApiError> {
        let caller = self.require(scope)?;
        match &caller.domains {
            None => Ok(caller),
            Some(domains) => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this API key is limited to {}; this needs a key of every domain",
                    apikeys::domains_text(domains)
                ),
            )),
        }
    }

    /// Whether the key may see and change the objects of `domain` (lower-case).
    pub fn may_use(&self, domain: &str) -> bool {
        self.caller.may_use(domain)
    }
}

impl Authenticated {
    /// An audit entry for something this caller did (SPEC O5).
    pub fn did(&self, event: &'static str) -> Entry {
        Entry::success(event, self.actor()).remote(self.remote)
    }

    /// An audit entry for something this caller asked for and was refused (SPEC O5);
    /// say why with a `reason` detail.
    pub fn was_refused(&self, event: &'static str) -> Entry {
        Entry::failure(event, self.actor()).remote(self.remote)
    }

    fn actor(&self) -> String {
        match &self.session {
            Some(s) => format!("web:{}", s.address),
            None => format!("api-key:{}#{}", self.caller.name, self.caller.key_id),
        }
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let handles = req.app_data::<web::Data<Handles>>().cloned();
        let limiter = req.app_data::<web::Data<AuthLimiter>>().cloned();
        let ip = client_ip(req);
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_string());
        // A bearer key wins over a cookie: browsers never add one on their own.
        let session = match (&token, &handles) {
            (None, Some(h)) => {
                session_cookie(req, over_https(h, req)).map(|t| (t, csrf_check(req)))
            }
            _ => None,
        };
        Box::pin(async move {
            let (Some(handles), Some(limiter)) = (handles, limiter) else {
                return Err(ApiError::new(
                    ErrorCode::InternalError,
                    "API not configured",
                ));
            };
            if !handles.health.get(Dependency::Database).up {
                return Err(ApiError::unavailable());
            }
            if let Some((cookie, csrf)) = session {
                return from_session(&handles, &limiter, ip, cookie, csrf).await;
            }
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                return Err(refuse(&handles, &limiter, ip, Refusal::NoKey).await);
            };
            // Verified before the limiter is asked: a valid key is served even from an
            // address with many failures. The check is bounded (see `apikeys::verify`).
            let verified = apikeys::verify(&handles.db, &token)
                .instrument(tracing::info_span!("db.verify_api_key"))
                .await?;
            match verified {
                Some(caller) => Ok(Authenticated {
                    caller,
                    remote: ip,
                    session: None,
                }),
                None => {
                    let prefix = token.get(..11).filter(|p| p.starts_with("mr_"));
                    Err(refuse(&handles, &limiter, ip, Refusal::BadKey(prefix)).await)
                }
            }
        })
    }
}

/// The client's address: behind a trusted proxy, the one it forwarded for.
pub fn client_ip(req: &HttpRequest) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    match req.app_data::<web::Data<ClientAddress>>() {
        Some(clients) => clients.client(peer, req.headers()),
        None => peer,
    }
}

/// The session token in the request's `Cookie` header(s), if any: over HTTPS only
/// the `__Host-` cookie counts.
pub fn session_cookie(req: &HttpRequest, secure: bool) -> Option<String> {
    let name = cookie_name(secure);
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim().to_string())
}

/// What a request made with a session must show besides its cookie.
enum Csrf {
    /// A safe method (GET, HEAD, OPTIONS): nothing.
    NotNeeded,
    /// The `X-CSRF-Token` sent (maybe none).
    Token(Option<String>),
    /// `Origin` names another site.
    CrossOrigin(String),
}

fn csrf_check(req: &HttpRequest) -> Csrf {
    use actix_web::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Csrf::NotNeeded;
    }
    if let Some(origin) = foreign_origin(req) {
        return Csrf::CrossOrigin(origin);
    }
    Csrf::Token(
        req.headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    )
}

/// The request's `Origin` (at most 256 characters of it) when it is not this server's
/// own, i.e. a page of another site (or a page whose origin the browser hides: `null`)
/// sent it. This server's own is the `Host` the browser asked for: the request's, or
/// behind a trusted proxy (`api.trusted_proxies`) the `X-Forwarded-Host` it passes on.
/// The scheme is not compared: a proxy may end TLS.
pub fn foreign_origin(req: &HttpRequest) -> Option<String> {
    let origin = req.headers().get(header::ORIGIN)?.to_str().ok()?;
    let header_text = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
    };
    let from_proxy = match (req.peer_addr(), req.app_data::<web::Data<ClientAddress>>()) {
        (Some(peer), Some(clients)) => clients.trusted(peer.ip().to_canonical()),
        _ => false,
    };
    let host = match from_proxy {
        true => header_text("x-forwarded-host").or_else(|| header_text("host")),
        false => header_text("host"),
    }
    .unwrap_or_default();
    // A default port written out names the same origin as none.
    let host = host
        .strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
        .unwrap_or(&host);
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin)
        .to_ascii_lowercase();
    (origin_host != host).then(|| origin.chars().take(256).collect())
}

/// The caller of a request that carries a session cookie.
async fn from_session(
    handles: &Handles,
    limiter: &AuthLimiter,
    ip: IpAddr,
    cookie: String,
    csrf: Csrf,
) -> Result<Authenticated, ApiError> {
    let found = websessions::find(&handles.db, &handles.config.api.sessions, &cookie)
        .instrument(tracing::info_span!("db.find_session"))
        .await?;
    let Some(active) = found else {
        return Err(refuse(handles, limiter, ip, Refusal::NoSession).await);
    };
    match csrf {
        Csrf::NotNeeded => {}
        Csrf::Token(Some(given)) if websessions::csrf_matches(&cookie, &given) => {}
        refused => {
            let (reason, origin) = match refused {
                Csrf::CrossOrigin(origin) => ("request from another site", Some(origin)),
                _ => ("missing or wrong CSRF token", None),
            };
            tracing::warn!(component = "api", event = "csrf_refused", remote = %ip, user = %active.user.address, reason, "request with a session refused");
            // Counted like a bad key: a page that keeps forging from this address is
            // soon answered 429 without an audit row each.
            if let Some(wait) = limiter.blocked(ip) {
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("too many refused requests from {ip}; retry in {wait} s"),
                ));
            }
            limiter.failed(ip);
            handles
                .audit
                .record(
                    Entry::failure("auth.csrf", format!("web:{}", active.user.address))
                        .remote(ip)
                        .detail("reason", reason)
                        .detail("origin", origin),
                )
                .await;
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{reason}: a change made with a session needs its token in X-CSRF-Token"),
            ));
        }
    }
    let user = active.user;
    let caller = Caller {
        key_id: 0,
        name: format!("web:{}", user.address),
        scopes: if user.admin {
            [Scope::Admin].into()
        } else {
            Default::default()
        },
        domains: if user.admin {
            None
        } else {
            Some(Default::default())
        },
    };
    Ok(Authenticated {
        caller,
        remote: ip,
        session: Some(WebSession {
            id: active.session.id,
            user_id: user.id,
            address: user.address,
            admin: user.admin,
            token: cookie,
            expires_at: active.session.expires_at.to_utc(),
        }),
    })
}

/// Why a request has no caller.
enum Refusal<'a> {
    NoKey,
    /// A session cookie naming no live session (ended, expired, or never made):
    /// counted, not audited (a browser left open past its session sends these).
    NoSession,
    /// Unknown, malformed or revoked; with the public prefix when it looks like one.
    BadKey(Option<&'a str>),
}

/// The answer to a request without a valid key: 429 while the client address is
/// blocked (neither counted nor audited again), else 401, counted and audited.
async fn refuse(
    handles: &Handles,
    limiter: &AuthLimiter,
    ip: IpAddr,
    why: Refusal<'_>,
) -> ApiError {
    if let Some(wait) = limiter.blocked(ip) {
        return ApiError::new(
            ErrorCode::RateLimited,
            format!("too many failed authentications from {ip}; retry in {wait} s"),
        );
    }
    limiter.failed(ip);
    let entry = Entry::failure("auth.api_key", "api:anonymous").remote(ip);
    let (entry, message) = match why {
        Refusal::NoSession => (None, "no session or the session ended: sign in again"),
        Refusal::NoKey => (
            Some(entry.detail("reason", "no key")),
            "missing API key: send Authorization: Bearer <key>",
        ),
        Refusal::BadKey(prefix) => {
            tracing::warn!(component = "api", event = "auth_failure", remote = %ip, "invalid API key");
            (
                Some(
                    entry
                        .detail("reason", "invalid or revoked key")
                        .detail("key_prefix", prefix),
                ),
                "invalid or revoked API key",
            )
        }
    };
    if let Some(entry) = entry {
        handles.audit.record(entry).await;
    }
    ApiError::new(ErrorCode::Unauthorized, message)
}
