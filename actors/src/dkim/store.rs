//! The `dkim_keys` rows: plain query functions shared by the CLI, the API and the
//! signer.
//!
//! A key signs while `signs_from <= now < signs_until` (no end: until rotated). Per
//! domain and algorithm the newest such key signs. `dkim rotate` makes the new key sign
//! from `now + delay` (time to publish its record) and ends the old key's signing then;
//! the old record must stay published for `grace` more (mail signed with it may still
//! be on its way), until `publish_until`, after which [`purge_expired`] removes the row.

use chrono::{DateTime, Duration, Utc};
use mairust_entities::{dkim_key, domain};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};

use super::keys::{self, Algorithm, DnsRecord, MasterKey};
use crate::accounts::{self, AccountError};
use crate::config::{MAX_DELAY_HOURS, MAX_GRACE_DAYS};

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("domain `{0}` already has a key with selector `{1}`")]
    SelectorExists(String, String),
    #[error("domain `{0}` has no key with selector `{1}`")]
    NoSuchKey(String, String),
    #[error(
        "`{0}` is not a valid selector: DNS labels of letters, digits and hyphens, separated by dots"
    )]
    InvalidSelector(String),
    #[error("`{0}` is not an algorithm: rsa or ed25519")]
    InvalidAlgorithm(String),
    /// A rotation's delay or grace period out of range: the field and its limit.
    #[error("{0} must be at most {1}")]
    OutOfRange(&'static str, u32),
    #[error(
        "domain `{0}` has no {1} key that signs now or later to rotate; add one with `mairust dkim generate`"
    )]
    NothingToRotate(String, &'static str),
    #[error(
        "domain `{0}` already has a {1} key ({2}); replace it with `mairust dkim rotate`, or remove it first"
    )]
    AlgorithmTaken(String, &'static str, String),
    /// The master key file, or a key that does not open or sign.
    #[error("{0}")]
    Key(String),
}

/// A key with its domain's name, for lists.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub domain: String,
    pub key: dkim_key::Model,
}

/// Where a key stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Made by a rotation, signs from `signs_from`: its record must be published now.
    Pending,
    /// Signs (or would, if a newer key of its algorithm did not).
    Active,
    /// Stopped signing; its record stays published until `publish_until`.
    Retired,
    /// Past `publish_until`: removed at the next purge; its record can go.
    Expired,
}

impl KeyState {
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Expired => "expired",
        }
    }
}

impl KeyInfo {
    pub fn algorithm(&self) -> Algorithm {
        Algorithm::parse(&self.key.algorithm).unwrap_or(Algorithm::Rsa)
    }

    pub fn state(&self, now: DateTime<Utc>) -> KeyState {
        let k = &self.key;
        let never_signs = k.signs_until.is_some_and(|until| until <= k.signs_from);
        if never_signs {
            // Rotated again before it started: only listed until its grace ends.
        } else if k.signs_from.to_utc() > now {
            return KeyState::Pending;
        } else if k.signs_until.is_none_or(|until| until.to_utc() > now) {
            return KeyState::Active;
        }
        if k.publish_until.is_none_or(|until| until.to_utc() > now) {
            KeyState::Retired
        } else {
            KeyState::Expired
        }
    }

    /// The TXT record that publishes the public key.
    pub fn record(&self) -> DnsRecord {
        DnsRecord::dkim(
            &self.domain,
            &self.key.selector,
            self.algorithm(),
            &self.key.public_key,
        )
    }
}

/// A selector is one or more DNS labels (RFC 6376 §3.1): letters, digits, hyphens, not
/// at a label's ends, at most 63 bytes each. Lower case.
pub fn normalize_selector(selector: &str) -> Result<String, DkimError> {
    let s = selector.trim().to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.is_empty() || s.len() > 200 || !s.split('.').all(label_ok) {
        return Err(DkimError::InvalidSelector(selector.to_string()));
    }
    Ok(s)
}

/// The selector a key gets when none is given: algorithm, date and time
/// (`rsa-202612031152`), so a key made and rotated the same day get different ones.
pub fn default_selector(algorithm: Algorithm, now: DateTime<Utc>) -> String {
    let prefix = match algorithm {
        Algorithm::Rsa => "rsa",
        Algorithm::Ed25519 => "ed",
    };
    format!("{prefix}-{}", now.format("%Y%m%d%H%M"))
}

/// The master key for commands that add keys: the file, made when there is none and
/// the database holds no key yet. A node without the file, or with another node's,
/// must not seal keys the others cannot open: both are refused, naming the fix.
pub async fn master_key(
    db: &impl ConnectionTrait,
    path: &std::path::Path,
) -> Result<MasterKey, DkimError> {
    let existing = any_key(db).await?;
    let master = match &existing {
        None => MasterKey::load_or_create(path),
        Some(_) => MasterKey::load(path).map_err(|e| {
            format!("{e}; the database holds DKIM keys sealed under a master key: copy dkim.master_key_file from the node that made them")
        }),
    }
    .map_err(DkimError::Key)?;
    if let Some(info) = existing {
        open_key(&master, &info).map_err(|_| {
            DkimError::Key(format!(
                "dkim.master_key_file {} does not open the DKIM keys in the database (it is another node's, or new): copy the file from the node that made them",
                path.display()
            ))
        })?;
    }
    Ok(master)
}

/// Whether `master` opens the keys in the database (any one of them); `Ok(None)` when
/// there is none. For the check at start.
pub async fn check_master(
    db: &impl ConnectionTrait,
    master: &MasterKey,
) -> Result<Option<bool>, DbErr> {
    Ok(any_key(db)
        .await?
        .map(|info| open_key(master, &info).is_ok()))
}

/// `Some(())` when the database holds a key: for the check at start when there is no
/// master key file to try.
pub async fn check_master_missing(db: &impl ConnectionTrait) -> Result<Option<()>, DbErr> {
    Ok(any_key(db).await?.map(|_| ()))
}

async fn any_key(db: &impl ConnectionTrait) -> Result<Option<KeyInfo>, DbErr> {
    let Some(key) = dkim_key::Entity::find()
        .order_by_asc(dkim_key::Column::Id)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let domain = domain::Entity::find_by_id(key.domain_id)
        .one(db)
        .await?
        .map(|d| d.name)
        .unwrap_or_default();
    Ok(Some(KeyInfo { domain, key }))
}

/// The PKCS#8 private key of a row, opened with `master`.
pub fn open_key(master: &MasterKey, info: &KeyInfo) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let algorithm = Algorithm::parse(&info.key.algorithm)
        .ok_or_else(|| format!("unknown algorithm `{}`", info.key.algorithm))?;
    let context = keys::seal_context(
        &info.domain,
        &info.key.selector,
        algorithm,
        &info.key.public_key,
    );
    master.open(&context, &info.key.sealed_key)
}

async fn domain_of(db: &impl ConnectionTrait, name: &str) -> Result<domain::Model, DkimError> {
    let name = accounts::normalize_domain(name)?;
    accounts::find_domain(db, &name)
        .await?
        .ok_or_else(|| AccountError::NoSuchDomain(name).into())
}

/// What a new key is made with.
pub struct NewKey<'a> {
    pub domain: &'a str,
    pub selector: Option<&'a str>,
    pub algorithm: Algorithm,
}

/// Makes a key pair and stores it sealed: it signs at once (`signs_from` now).
pub async fn add(
    db: &DatabaseConnection,
    master: &MasterKey,
    new: NewKey<'_>,
) -> Result<KeyInfo, DkimError> {
    let now = Utc::now();
    let pair = generated(new.algorithm).await?;
    let txn = db.begin().await?;
    let domain = lock_domain(&txn, new.domain).await?;
    if let Some(other) = signing_or_pending(&txn, &domain, new.algorithm, now)
        .await?
        .first()
    {
        return Err(DkimError::AlgorithmTaken(
            domain.name,
            new.algorithm.key_type(),
            other.selector.clone(),
        ));
    }
    let info = insert(&txn, master, &new, pair, now, now).await?;
    txn.commit().await?;
    Ok(info)
}

/// The domain row, locked for the transaction, so two nodes adding or rotating keys of
/// one domain at once go one after the other.
async fn lock_domain(
    txn: &sea_orm::DatabaseTransaction,
    name: &str,
) -> Result<domain::Model, DkimError> {
    use sea_orm::sea_query::{Expr, Query};
    // A write first, on both backends: PostgreSQL locks the row; SQLite takes its
    // write lock now, so the reads that follow cannot be outdated by another writer
    // before this transaction writes (which SQLite would refuse at once, busy).
    let name = accounts::normalize_domain(name)?;
    let touch = Query::update()
        .table(domain::Entity)
        .value(domain::Column::Name, Expr::col(domain::Column::Name))
        .and_where(domain::Column::Name.eq(name.as_str()))
        .to_owned();
    txn.execute(&touch).await?;
    domain_of(txn, &name).await
}

/// The domain's keys of `algorithm` that sign now or will.
async fn signing_or_pending(
    db: &impl ConnectionTrait,
    domain: &domain::Model,
    algorithm: Algorithm,
    now: DateTime<Utc>,
) -> Result<Vec<dkim_key::Model>, DbErr> {
    let keys = dkim_key::Entity::find()
        .filter(dkim_key::Column::DomainId.eq(domain.id))
        .filter(dkim_key::Column::Algorithm.eq(algorithm.name()))
        .filter(
            Condition::any()
                .add(dkim_key::Column::SignsUntil.is_null())
                .add(dkim_key::Column::SignsUntil.gt(now.fixed_offset())),
        )
        .all(db)
        .await?;
    // A key rotated again before it started (it ends where it begins) never signs.
    Ok(keys
        .into_iter()
        .filter(|k| k.signs_until.is_none_or(|until| until > k.signs_from))
        .collect())
}

/// A key pair made on a blocking thread (an RSA key takes tens of milliseconds), before
/// any transaction begins.
async fn generated(algorithm: Algorithm) -> Result<keys::NewKeyPair, DkimError> {
    tokio::task::spawn_blocking(move || keys::generate(algorithm))
        .await
        .map_err(|e| DkimError::Key(format!("key generation failed: {e}")))?
        .map_err(DkimError::Key)
}

async fn insert(
    db: &impl ConnectionTrait,
    master: &MasterKey,
    new: &NewKey<'_>,
    pair: keys::NewKeyPair,
    now: DateTime<Utc>,
    signs_from: DateTime<Utc>,
) -> Result<KeyInfo, DkimError> {
    let domain = domain_of(db, new.domain).await?;
    let selector = match new.selector {
        Some(s) => normalize_selector(s)?,
        None => default_selector(new.algorithm, now),
    };
    let taken = dkim_key::Entity::find()
        .filter(dkim_key::Column::DomainId.eq(domain.id))
        .filter(dkim_key::Column::Selector.eq(&selector))
        .one(db)
        .await?;
    if taken.is_some() {
        return Err(DkimError::SelectorExists(domain.name, selector));
    }
    let context = keys::seal_context(&domain.name, &selector, new.algorithm, &pair.public_key);
    let sealed = master.seal(&context, &pair.pkcs8).map_err(DkimError::Key)?;
    let key = dkim_key::ActiveModel {
        domain_id: Set(domain.id),
        selector: Set(selector.clone()),
        algorithm: Set(new.algorithm.name().to_string()),
        public_key: Set(pair.public_key.clone()),
        sealed_key: Set(sealed),
        created_at: Set(now.into()),
        signs_from: Set(signs_from.into()),
        signs_until: Set(None),
        publish_until: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
    .map_err(|e| match e.sql_err() {
        // Another node or command made the same selector meanwhile.
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            DkimError::SelectorExists(domain.name.clone(), selector.clone())
        }
        _ => e.into(),
    })?;
    Ok(KeyInfo {
        domain: domain.name,
        key,
    })
}

/// What a rotation did: the new key, and the keys it ends.
pub struct Rotation {
    pub new: KeyInfo,
    pub retired: Vec<KeyInfo>,
}

/// Rotation: a new key of `algorithm` that signs `delay_hours` from now; the domain's
/// keys of that algorithm that sign now or later stop signing then, and stay listed
/// (their records published) for `grace_days` more. One transaction.
pub async fn rotate(
    db: &DatabaseConnection,
    master: &MasterKey,
    new: NewKey<'_>,
    delay_hours: u32,
    grace_days: u32,
) -> Result<Rotation, DkimError> {
    if delay_hours > MAX_DELAY_HOURS {
        return Err(DkimError::OutOfRange("delay_hours", MAX_DELAY_HOURS));
    }
    if grace_days > MAX_GRACE_DAYS {
        return Err(DkimError::OutOfRange("grace_days", MAX_GRACE_DAYS));
    }
    let delay = Duration::hours(delay_hours.into());
    let grace = Duration::days(grace_days.into());
    let now = Utc::now();
    let switch = now + delay;
    let pair = generated(new.algorithm).await?;
    let txn = db.begin().await?;
    let domain = lock_domain(&txn, new.domain).await?;
    let current = signing_or_pending(&txn, &domain, new.algorithm, now).await?;
    if current.is_empty() {
        return Err(DkimError::NothingToRotate(
            domain.name,
            new.algorithm.key_type(),
        ));
    }
    let created = insert(&txn, master, &new, pair, now, switch).await?;
    let mut retired = Vec::new();
    for old in current {
        // A key signing now signs until the switch; one still pending (a rotation
        // rotated again) never signs: it ends where it begins.
        let from = old.signs_from.to_utc();
        let ends = if from > now { from } else { switch };
        let mut row: dkim_key::ActiveModel = old.into();
        row.signs_until = Set(Some(ends.into()));
        row.publish_until = Set(Some((ends + grace).into()));
        retired.push(KeyInfo {
            domain: domain.name.clone(),
            key: row.update(&txn).await?,
        });
    }
    txn.commit().await?;
    Ok(Rotation {
        new: created,
        retired,
    })
}

/// Removes one key now (its signatures stop verifying once its record is gone).
pub async fn remove(
    db: &DatabaseConnection,
    domain: &str,
    selector: &str,
) -> Result<KeyInfo, DkimError> {
    let domain = domain_of(db, domain).await?;
    let selector = normalize_selector(selector)?;
    let key = dkim_key::Entity::find()
        .filter(dkim_key::Column::DomainId.eq(domain.id))
        .filter(dkim_key::Column::Selector.eq(&selector))
        .one(db)
        .await?
        .ok_or_else(|| DkimError::NoSuchKey(domain.name.clone(), selector))?;
    dkim_key::Entity::delete_by_id(key.id).exec(db).await?;
    Ok(KeyInfo {
        domain: domain.name,
        key,
    })
}

/// The keys of one domain (an error when it is not ours) or of all, by domain and then
/// age.
pub async fn list(
    db: &DatabaseConnection,
    domain: Option<&str>,
) -> Result<Vec<KeyInfo>, DkimError> {
    let domains: Vec<domain::Model> = match domain {
        Some(name) => vec![domain_of(db, name).await?],
        None => accounts::list_domains(db).await?,
    };
    let ids: Vec<i64> = domains.iter().map(|d| d.id).collect();
    let keys = dkim_key::Entity::find()
        .filter(dkim_key::Column::DomainId.is_in(ids))
        .order_by_asc(dkim_key::Column::DomainId)
        .order_by_asc(dkim_key::Column::SignsFrom)
        .order_by_asc(dkim_key::Column::Id)
        .all(db)
        .await?;
    let name = |id: i64| {
        domains
            .iter()
            .find(|d| d.id == id)
            .map(|d| d.name.clone())
            .unwrap_or_default()
    };
    let mut out: Vec<KeyInfo> = keys
        .into_iter()
        .map(|key| KeyInfo {
            domain: name(key.domain_id),
            key,
        })
        .collect();
    out.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(out)
}

/// The keys that sign mail from `domain` at `now`: per algorithm, the newest whose
/// signing period holds `now`. Empty when the domain is not ours or has none.
pub async fn signing_keys(
    db: &impl ConnectionTrait,
    domain: &str,
    now: DateTime<Utc>,
) -> Result<Vec<KeyInfo>, DbErr> {
    use sea_orm::sea_query::Query;
    // One query per submitted message: the domain by name inside it.
    let domain_id = Query::select()
        .column(domain::Column::Id)
        .from(domain::Entity)
        .and_where(domain::Column::Name.eq(domain.to_ascii_lowercase()))
        .to_owned();
    let keys = dkim_key::Entity::find()
        .filter(dkim_key::Column::DomainId.in_subquery(domain_id))
        .filter(dkim_key::Column::SignsFrom.lte(now.fixed_offset()))
        .filter(
            Condition::any()
                .add(dkim_key::Column::SignsUntil.is_null())
                .add(dkim_key::Column::SignsUntil.gt(now.fixed_offset())),
        )
        .order_by_desc(dkim_key::Column::SignsFrom)
        .order_by_desc(dkim_key::Column::Id)
        .all(db)
        .await?;
    let mut chosen: Vec<KeyInfo> = Vec::new();
    for key in keys {
        if !chosen.iter().any(|c| c.key.algorithm == key.algorithm) {
            chosen.push(KeyInfo {
                domain: domain.to_ascii_lowercase(),
                key,
            });
        }
    }
    Ok(chosen)
}

/// Removes the keys whose record no longer needs to be published; returns how many.
pub async fn purge_expired(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<u64, DbErr> {
    let done = dkim_key::Entity::delete_many()
        .filter(dkim_key::Column::PublishUntil.lte(now.fixed_offset()))
        .exec(db)
        .await?;
    Ok(done.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_dns_labels() {
        assert_eq!(normalize_selector(" Rsa-2026 ").unwrap(), "rsa-2026");
        assert_eq!(normalize_selector("a.b-c").unwrap(), "a.b-c");
        for bad in ["", "-a", "a-", "a..b", "a_b", "a b", "ä", &"x".repeat(64)] {
            assert!(normalize_selector(bad).is_err(), "{bad:?}");
        }
    }
}
