//! Bearer API keys (SPEC A2): the [`Authenticated`] extractor verifies the key, answers
//! 401 without or with a bad key, 429 to a bad key after too many failures from one
//! client address (a valid key is always served: behind a proxy or NAT, one client's
//! failures must not lock out the others), and 503 at once while the database is down
//! (SPEC A6). [`Authenticated::require`] turns a missing scope into 403, and
//! [`Authenticated::require_global`] refuses a key limited to some domains what concerns
//! the whole server.
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

/// The verified caller of an API request.
pub struct Authenticated {
    pub caller: Caller,
    /// The client's address ([`ClientAddress`]: behind a trusted proxy, the one it
    /// forwarded for).
    pub remote: IpAddr,
}

impl Authenticated {
    /// 403 unless the key has `scope` (admin has all).
    pub fn require(&self, scope: Scope) -> Result<&Caller, ApiError> {
        if self.caller.has(scope) {
            Ok(&self.caller)
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this API key lacks the `{scope}` scope"),
            ))
        }
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
        format!("api-key:{}#{}", self.caller.name, self.caller.key_id)
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let handles = req.app_data::<web::Data<Handles>>().cloned();
        let limiter = req.app_data::<web::Data<AuthLimiter>>().cloned();
        let peer = req
            .peer_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let ip = match req.app_data::<web::Data<ClientAddress>>() {
            Some(clients) => clients.client(peer, req.headers()),
            None => peer,
        };
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_string());
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
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                return Err(refuse(&handles, &limiter, ip, Refusal::NoKey).await);
            };
            // Verified before the limiter is asked: a valid key is served even from an
            // address with many failures. The check is bounded (see `apikeys::verify`).
            let verified = apikeys::verify(&handles.db, &token)
                .instrument(tracing::info_span!("db.verify_api_key"))
                .await?;
            match verified {
                Some(caller) => Ok(Authenticated { caller, remote: ip }),
                None => {
                    let prefix = token.get(..11).filter(|p| p.starts_with("mr_"));
                    Err(refuse(&handles, &limiter, ip, Refusal::BadKey(prefix)).await)
                }
            }
        })
    }
}

/// Why a request has no caller.
enum Refusal<'a> {
    NoKey,
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
        Refusal::NoKey => (
            entry.detail("reason", "no key"),
            "missing API key: send Authorization: Bearer <key>",
        ),
        Refusal::BadKey(prefix) => {
            tracing::warn!(component = "api", event = "auth_failure", remote = %ip, "invalid API key");
            (
                entry
                    .detail("reason", "invalid or revoked key")
                    .detail("key_prefix", prefix),
                "invalid or revoked API key",
            )
        }
    };
    handles.audit.record(entry).await;
    ApiError::new(ErrorCode::Unauthorized, message)
}
