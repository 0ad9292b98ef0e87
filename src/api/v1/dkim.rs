//! `/api/v1/domains/{name}/dkim` and `/api/v1/domains/{name}/dns`: a domain's DKIM
//! keys (list, add, rotate, remove) and the DNS records it needs, for the Admin UI.
//! Reading takes `read`; changing keys takes `admin` (of that domain). Private keys
//! never appear in an answer.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use mairust_actors::apikeys::Scope;
use mairust_actors::dkim::dns::{PublishRecord, domain_records};
use mairust_actors::dkim::store::{self, KeyInfo, NewKey};
use mairust_actors::dkim::{Algorithm, DkimError, MasterKey};
use mairust_actors::supervisor::Handles;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::domains::{account_error, find_in_reach};
use super::{Page, Pagination};
use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, AuthErrors, ErrorBody, ErrorCode};

#[derive(Debug, Serialize, ToSchema)]
pub struct DkimKeyView {
    pub domain: String,
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// `pending` (publish its record: it signs from `signs_from`), `active`, `retired`
    /// (keep its record until `publish_until`) or `expired`.
    pub state: String,
    /// The record to publish: `<selector>._domainkey.<domain>`.
    pub dns_name: String,
    /// Its TXT text: `v=DKIM1; k=...; p=...`.
    pub dns_value: String,
    pub created_at: DateTime<Utc>,
    pub signs_from: DateTime<Utc>,
    pub signs_until: Option<DateTime<Utc>>,
    pub publish_until: Option<DateTime<Utc>>,
}

impl DkimKeyView {
    fn new(info: KeyInfo, now: DateTime<Utc>) -> Self {
        let record = info.record();
        DkimKeyView {
            state: info.state(now).name().to_string(),
            dns_name: record.name,
            dns_value: record.value,
            selector: info.key.selector,
            algorithm: info.key.algorithm,
            created_at: info.key.created_at.to_utc(),
            signs_from: info.key.signs_from.to_utc(),
            signs_until: info.key.signs_until.map(|t| t.to_utc()),
            publish_until: info.key.publish_until.map(|t| t.to_utc()),
            domain: info.domain,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDkimKey {
    /// Default: the algorithm and the UTC date and time to the minute,
    /// `rsa-YYYYMMDDHHMM` or `ed-YYYYMMDDHHMM` (e.g. `rsa-202612031152`).
    pub selector: Option<String>,
    /// `rsa` (RSA-2048, the default) or `ed25519`.
    pub algorithm: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DkimRotation {
    /// The new key's; default: `rsa-YYYYMMDDHHMM` or `ed-YYYYMMDDHHMM` (UTC, to the
    /// minute).
    pub selector: Option<String>,
    /// The algorithm of the key replaced and of its successor: `rsa` (default) or
    /// `ed25519`.
    pub algorithm: Option<String>,
    /// Hours until the new key signs (default `dkim.rotation_delay_hours`).
    pub delay_hours: Option<u32>,
    /// Days the old record stays listed after that (default `dkim.rotation_grace_days`).
    pub grace_days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotationView {
    pub new: DkimKeyView,
    pub retired: Vec<DkimKeyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DnsRecordView {
    #[serde(flatten)]
    pub record: PublishRecord,
    /// The record as a zone file line (long TXT texts split into 255-byte strings).
    pub zone_line: String,
}

/// A whole list as one page: a domain has a handful of keys and records.
fn whole<T: ToSchema>(data: Vec<T>) -> Page<T> {
    Page {
        data,
        pagination: Pagination {
            cursor: None,
            has_more: false,
        },
    }
}

fn dkim_error(e: DkimError) -> ApiError {
    match e {
        DkimError::Db(e) => e.into(),
        DkimError::Account(e) => account_error(e),
        DkimError::SelectorExists(..)
        | DkimError::NothingToRotate(..)
        | DkimError::AlgorithmTaken(..) => ApiError::conflict(e.to_string()),
        DkimError::NoSuchKey(..) => ApiError::not_found(e.to_string()),
        DkimError::InvalidSelector(_) => ApiError::field("selector", e.to_string()),
        DkimError::InvalidAlgorithm(_) => ApiError::field("algorithm", e.to_string()),
        DkimError::OutOfRange(field, _) => ApiError::field(field, e.to_string()),
        DkimError::Key(reason) => {
            // The reason names server paths (dkim.master_key_file) and key handling:
            // for the log, not for API clients. The CLI, run on the server, prints it.
            tracing::error!(component = "api", event = "dkim_key_error", error = %reason, "DKIM key operation failed");
            ApiError::new(
                ErrorCode::InternalError,
                "this node could not make or open a DKIM key; the server log says why (most often its DKIM master key file is missing, unreadable or another node's)",
            )
        }
    }
}

fn algorithm(text: Option<&str>) -> Result<Algorithm, ApiError> {
    match text {
        None => Ok(Algorithm::Rsa),
        Some(t) => Algorithm::parse(t)
            .ok_or_else(|| dkim_error(DkimError::InvalidAlgorithm(t.to_string()))),
    }
}

async fn master_key(handles: &Handles) -> Result<MasterKey, ApiError> {
    store::master_key(&handles.db, &handles.config.dkim.master_key_file)
        .await
        .map_err(dkim_error)
}

/// A domain's DKIM keys.
#[utoipa::path(
    tag = "domains",
    params(("name" = String, Path, description = "Domain name")),
    responses(
        (status = 200, description = "The domain's keys, oldest first", body = Page<DkimKeyView>),
        (status = 404, description = "No such domain", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/domains/{name}/dkim")]
pub async fn list(
    auth: Authenticated,
    handles: web::Data<Handles>,
    name: web::Path<String>,
) -> Result<web::Json<Page<DkimKeyView>>, ApiError> {
    auth.require(Scope::Read)?;
    let d = find_in_reach(&handles, &auth.caller, name.to_ascii_lowercase()).await?;
    let now = Utc::now();
    let keys = store::list(&handles.db, Some(&d.name))
        .await
        .map_err(dkim_error)?;
    Ok(web::Json(whole(
        keys.into_iter().map(|k| DkimKeyView::new(k, now)).collect(),
    )))
}

/// Add a DKIM key to a domain; it signs at once (an `admin` key).
#[utoipa::path(
    tag = "domains",
    params(("name" = String, Path, description = "Domain name")),
    request_body = NewDkimKey,
    responses(
        (status = 201, description = "Created; publish `dns_name` TXT `dns_value`", body = DkimKeyView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 404, description = "No such domain", body = ErrorBody),
        (status = 409, description = "The selector exists, or the domain has a key of that algorithm (rotate it)", body = ErrorBody),
        (status = 422, description = "Invalid selector or algorithm", body = ErrorBody),
        (status = 500, description = "This node's DKIM master key is missing or another node's", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/domains/{name}/dkim")]
pub async fn create(
    auth: Authenticated,
    handles: web::Data<Handles>,
    name: web::Path<String>,
    body: web::Json<NewDkimKey>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Admin)?;
    let d = find_in_reach(&handles, &auth.caller, name.to_ascii_lowercase()).await?;
    let algorithm = algorithm(body.algorithm.as_deref())?;
    if let Some(s) = &body.selector {
        store::normalize_selector(s).map_err(dkim_error)?;
    }
    let master = master_key(&handles).await?;
    let new = NewKey {
        domain: &d.name,
        selector: body.selector.as_deref(),
        algorithm,
    };
    let info = store::add(&handles.db, &master, new)
        .await
        .map_err(dkim_error)?;
    handles
        .audit
        .record(
            auth.did("dkim.create")
                .target(format!("{}/{}", info.domain, info.key.selector))
                .detail("algorithm", info.key.algorithm.as_str()),
        )
        .await;
    Ok(HttpResponse::Created().json(DkimKeyView::new(info, Utc::now())))
}

/// Rotate a domain's key of one algorithm (an `admin` key): the new key signs after
/// `delay_hours`, the old ones until then, and stay listed `grace_days` more.
#[utoipa::path(
    tag = "domains",
    params(("name" = String, Path, description = "Domain name")),
    request_body = DkimRotation,
    responses(
        (status = 200, description = "The new key and the keys it retires", body = RotationView),
        (status = 400, description = "Not a JSON body", body = ErrorBody),
        (status = 404, description = "No such domain", body = ErrorBody),
        (status = 409, description = "No key to rotate, or the selector exists", body = ErrorBody),
        (status = 422, description = "Invalid selector, algorithm or duration", body = ErrorBody),
        (status = 500, description = "This node's DKIM master key is missing or another node's", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/domains/{name}/dkim/rotate")]
pub async fn rotate(
    auth: Authenticated,
    handles: web::Data<Handles>,
    name: web::Path<String>,
    body: web::Json<DkimRotation>,
) -> Result<web::Json<RotationView>, ApiError> {
    auth.require(Scope::Admin)?;
    let d = find_in_reach(&handles, &auth.caller, name.to_ascii_lowercase()).await?;
    let algorithm = algorithm(body.algorithm.as_deref())?;
    if let Some(s) = &body.selector {
        store::normalize_selector(s).map_err(dkim_error)?;
    }
    let config = &handles.config.dkim;
    let delay_hours = body.delay_hours.unwrap_or(config.rotation_delay_hours);
    if delay_hours > 24 * 90 {
        return Err(ApiError::field(
            "delay_hours",
            "must be at most 2160 (90 days)",
        ));
    }
    let grace_days = body.grace_days.unwrap_or(config.rotation_grace_days);
    if grace_days > 365 {
        return Err(ApiError::field("grace_days", "must be at most 365"));
    }
    let master = master_key(&handles).await?;
    let new = NewKey {
        domain: &d.name,
        selector: body.selector.as_deref(),
        algorithm,
    };
    let rotation = store::rotate(&handles.db, &master, new, delay_hours, grace_days)
        .await
        .map_err(dkim_error)?;
    let retired: Vec<String> = rotation
        .retired
        .iter()
        .map(|k| k.key.selector.clone())
        .collect();
    handles
        .audit
        .record(
            auth.did("dkim.rotate")
                .target(format!(
                    "{}/{}",
                    rotation.new.domain, rotation.new.key.selector
                ))
                .detail("algorithm", rotation.new.key.algorithm.as_str())
                .detail("retired", retired),
        )
        .await;
    let now = Utc::now();
    Ok(web::Json(RotationView {
        new: DkimKeyView::new(rotation.new, now),
        retired: rotation
            .retired
            .into_iter()
            .map(|k| DkimKeyView::new(k, now))
            .collect(),
    }))
}

/// Remove a DKIM key now (an `admin` key).
#[utoipa::path(
    tag = "domains",
    params(
        ("name" = String, Path, description = "Domain name"),
        ("selector" = String, Path, description = "The key's selector")
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such domain or key", body = ErrorBody),
        (status = 422, description = "Not a selector", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["admin"]))
)]
#[delete("/domains/{name}/dkim/{selector}")]
pub async fn remove(
    auth: Authenticated,
    handles: web::Data<Handles>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Admin)?;
    let (name, selector) = path.into_inner();
    let d = find_in_reach(&handles, &auth.caller, name.to_ascii_lowercase()).await?;
    let info = store::remove(&handles.db, &d.name, &selector)
        .await
        .map_err(dkim_error)?;
    handles
        .audit
        .record(
            auth.did("dkim.delete")
                .target(format!("{}/{}", info.domain, info.key.selector)),
        )
        .await;
    Ok(HttpResponse::NoContent().finish())
}

/// The DNS records a domain needs: MX, SPF, its DKIM keys, DMARC.
#[utoipa::path(
    tag = "domains",
    params(("name" = String, Path, description = "Domain name")),
    responses(
        (status = 200, description = "The records to publish", body = Page<DnsRecordView>),
        (status = 404, description = "No such domain", body = ErrorBody),
        AuthErrors
    ),
    security(("bearer" = ["read"]))
)]
#[get("/domains/{name}/dns")]
pub async fn dns(
    auth: Authenticated,
    handles: web::Data<Handles>,
    name: web::Path<String>,
) -> Result<web::Json<Page<DnsRecordView>>, ApiError> {
    auth.require(Scope::Read)?;
    let d = find_in_reach(&handles, &auth.caller, name.to_ascii_lowercase()).await?;
    let keys = store::list(&handles.db, Some(&d.name))
        .await
        .map_err(dkim_error)?;
    let records = domain_records(&d.name, &handles.config.server.hostname, &keys, Utc::now());
    Ok(web::Json(whole(
        records
            .into_iter()
            .map(|record| DnsRecordView {
                zone_line: record.zone_line(),
                record,
            })
            .collect(),
    )))
}
