//! REST API keys (SPEC A2): `mr_<prefix>_<secret>`, 128 random bits in the secret,
//! shown once. The database keeps the prefix (to find the key and to show it in lists)
//! and a SHA-256 of the whole key, compared in constant time.
//!
//! A key may be limited to some domains (SPEC S4): it then acts only on those domains'
//! users, mailboxes, messages and queue entries, and may make only keys no wider than
//! itself ([`Caller::may_grant`]). The stored hash of such a key covers its domain list,
//! so a node or schema that knows nothing of the limit refuses the key instead of
//! widening it (see the `api_key_domains` migration).
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::Utc;
use mairust_entities::api_key;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts;
use crate::tokens::{hex, random_hex, same};

/// What a key may do. `admin` includes every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Send,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Send, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Send => "send",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope `{s}` (read, write, send, admin)"))
    }
}

/// A verified key: who is calling and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: i64,
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    /// The lower-case domain names the key is limited to; `None`: every domain.
    pub domains: Option<BTreeSet<String>>,
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// Whether the key may see and change the objects of `domain` (lower-case).
    pub fn may_use(&self, domain: &str) -> bool {
        self.domains.as_ref().is_none_or(|d| d.contains(domain))
    }

    /// Whether a key with `scopes`, limited to `domains` (`None`: every domain), is no
    /// wider than this one; the error says what is too wide.
    pub fn may_grant(
        &self,
        scopes: &BTreeSet<Scope>,
        domains: Option<&BTreeSet<String>>,
    ) -> Result<(), String> {
        if let Some(scope) = scopes.iter().find(|s| !self.has(**s)) {
            return Err(format!(
                "this API key lacks the `{scope}` scope, so it cannot give it"
            ));
        }
        match (&self.domains, domains) {
            (None, _) => Ok(()),
            (Some(own), None) => Err(format!(
                "this API key is limited to {}; a key it makes must be limited to some of them",
                domains_text(own)
            )),
            (Some(own), Some(asked)) => match asked.iter().find(|d| !own.contains(*d)) {
                Some(d) => Err(format!(
                    "this API key is limited to {}, not {d}",
                    domains_text(own)
                )),
                None => Ok(()),
            },
        }
    }

    /// Whether this key may see (list, revoke) `key`: every key for an unlimited one,
    /// keys limited to some of its own domains for a limited one.
    pub fn may_see_key(&self, key: &api_key::Model) -> bool {
        match (&self.domains, parse_domains(key.domains.as_deref())) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(own), Some(theirs)) => theirs.is_subset(own),
        }
    }
}

/// A key as created: the only time the secret is known.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    pub key: String,
    pub record: api_key::Model,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A bad field of a new key: the field (`name`, `scopes`, `domains`) and why.
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error("no API key with id {0}")]
    NotFound(i64),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Hex digits after `mr_` in the public prefix, and in the secret after it.
const PREFIX_HEX: usize = 8;
const SECRET_HEX: usize = 40;

/// What is stored of a key: the SHA-256 of the key, and for a key limited to some
/// domains of its domain list (as stored) and the key, so that code unaware of the
/// limit cannot match it.
fn digest(key: &str, domains: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    if let Some(domains) = domains {
        hasher.update(b"domains:");
        hasher.update(domains.as_bytes());
        hasher.update(b"\n");
    }
    hasher.update(key.as_bytes());
    hex(&hasher.finalize())
}

fn scopes_text(scopes: &BTreeSet<Scope>) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn parse_scopes(text: &str) -> BTreeSet<Scope> {
    text.split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The stored domain list as a set; `None` (every domain) when there is none.
pub fn parse_domains(text: Option<&str>) -> Option<BTreeSet<String>> {
    text.map(|t| t.split_whitespace().map(str::to_string).collect())
}

/// `a.example, b.example`, for messages.
pub fn domains_text(domains: &BTreeSet<String>) -> String {
    domains
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Domain names as given for a new key, normalized (lower case, no final dot); an
/// empty list is refused (leave the list out for a key of every domain).
pub fn normalize_domains<S: AsRef<str>>(names: &[S]) -> Result<BTreeSet<String>, KeyError> {
    if names.is_empty() {
        return Err(KeyError::Invalid(
            "domains",
            "must name at least one domain (leave it out for a key of every domain)".into(),
        ));
    }
    names
        .iter()
        .map(|n| {
            accounts::normalize_domain(n.as_ref()).map_err(|_| {
                KeyError::Invalid("domains", format!("`{}` is not a domain name", n.as_ref()))
            })
        })
        .collect()
}

/// Creates a key, limited to `domains` ([`normalize_domains`]; each must exist) or for
/// every domain (`None`); the returned `key` is shown once and never stored.
pub async fn create(
    db: &DatabaseConnection,
    name: &str,
    scopes: &BTreeSet<Scope>,
    domains: Option<&BTreeSet<String>>,
) -> Result<NewKey, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 255 {
        return Err(KeyError::Invalid(
            "name",
            "must be 1 to 255 characters".into(),
        ));
    }
    if scopes.is_empty() {
        return Err(KeyError::Invalid(
            "scopes",
            "at least one scope is needed".into(),
        ));
    }
    if let Some(domains) = domains {
        if domains.is_empty() {
            return Err(KeyError::Invalid(
                "domains",
                "must name at least one domain".into(),
            ));
        }
        for d in domains {
            if accounts::find_domain(db, d).await?.is_none() {
                return Err(KeyError::Invalid("domains", format!("no domain {d}")));
            }
        }
    }
    let domains = domains.map(|d| d.iter().map(String::as_str).collect::<Vec<_>>().join(" "));
    // uuid v4 carries 122 random bits per 32 hex digits: the secret has 32 + 8 more.
    let prefix = format!("mr_{}", random_hex(PREFIX_HEX));
    let key = format!("{prefix}_{}", random_hex(SECRET_HEX));
    let record = api_key::ActiveModel {
        name: Set(name.to_string()),
        prefix: Set(prefix),
        secret_hash: Set(digest(&key, domains.as_deref())),
        scopes: Set(scopes_text(scopes)),
        domains: Set(domains),
        created_at: Set(Utc::now().fixed_offset()),
        last_used_at: Set(None),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(NewKey { key, record })
}

pub async fn list(db: &DatabaseConnection) -> Result<Vec<api_key::Model>, DbErr> {
    api_key::Entity::find()
        .order_by_asc(api_key::Column::Id)
        .all(db)
        .await
}

pub async fn get(db: &DatabaseConnection, id: i64) -> Result<api_key::Model, KeyError> {
    api_key::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(KeyError::NotFound(id))
}

/// Revokes a key: it stops working at once and stays listed as revoked.
pub async fn revoke(db: &DatabaseConnection, id: i64) -> Result<api_key::Model, KeyError> {
    let key = get(db, id).await?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let mut active: api_key::ActiveModel = key.into();
    active.revoked_at = Set(Some(Utc::now().fixed_offset()));
    Ok(active.update(db).await?)
}

/// The public prefix of a presented key (`mr_xxxxxxxx`), when the whole key has the
/// shape of one this server makes: anything else is refused without a database query.
fn prefix_of(presented: &str) -> Option<&str> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let (prefix, secret) = presented.rsplit_once('_')?;
    let digits = prefix.strip_prefix("mr_")?;
    (hex(digits, PREFIX_HEX) && hex(secret, SECRET_HEX)).then_some(prefix)
}

/// The caller a bearer key belongs to, or `None` for an unknown, malformed or revoked
/// key. Bounded work whatever is presented: a shape check, one lookup by the unique
/// prefix, one SHA-256 of at most 52 bytes. Records when the key was last used (at most
/// once a minute).
pub async fn verify(db: &DatabaseConnection, presented: &str) -> Result<Option<Caller>, DbErr> {
    let Some(prefix) = prefix_of(presented) else {
        return Ok(None);
    };
    let Some(key) = api_key::Entity::find()
        .filter(api_key::Column::Prefix.eq(prefix))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if key.revoked_at.is_some()
        || !same(&key.secret_hash, &digest(presented, key.domains.as_deref()))
    {
        return Ok(None);
    }
    let now = Utc::now();
    if key
        .last_used_at
        .is_none_or(|t| now - t.to_utc() > chrono::Duration::minutes(1))
    {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(now.fixed_offset()))
            .filter(api_key::Column::Id.eq(key.id))
            .exec(db)
            .await?;
    }
    Ok(Some(Caller {
        key_id: key.id,
        name: key.name,
        scopes: parse_scopes(&key.scopes),
        domains: parse_domains(key.domains.as_deref()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_admin_implies_all() {
        let caller = Caller {
            key_id: 1,
            name: "t".into(),
            scopes: parse_scopes("admin"),
            domains: None,
        };
        assert!(Scope::ALL.iter().all(|s| caller.has(*s)));
        let reader = Caller {
            key_id: 2,
            name: "r".into(),
            scopes: parse_scopes("read bogus"),
            domains: None,
        };
        assert!(reader.has(Scope::Read) && !reader.has(Scope::Write));
        assert!("root".parse::<Scope>().is_err());
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_limited_key_grants_and_sees_no_more_than_itself() {
        let limited = Caller {
            key_id: 3,
            name: "a".into(),
            scopes: parse_scopes("read write"),
            domains: Some(set(&["a.example", "b.example"])),
        };
        assert!(limited.may_use("a.example") && !limited.may_use("c.example"));
        let read = parse_scopes("read");
        assert!(limited.may_grant(&read, Some(&set(&["a.example"]))).is_ok());
        assert!(limited.may_grant(&read, None).is_err(), "unlimited");
        assert!(
            limited
                .may_grant(&read, Some(&set(&["a.example", "c.example"])))
                .is_err(),
            "another domain"
        );
        assert!(
            limited
                .may_grant(&parse_scopes("admin"), Some(&set(&["a.example"])))
                .is_err(),
            "a scope it lacks"
        );
        let key = |domains: Option<&str>| api_key::Model {
            id: 9,
            name: "k".into(),
            prefix: "mr_00000000".into(),
            secret_hash: String::new(),
            scopes: "read".into(),
            domains: domains.map(str::to_string),
            created_at: Utc::now().fixed_offset(),
            last_used_at: None,
            revoked_at: None,
        };
        assert!(limited.may_see_key(&key(Some("b.example"))));
        assert!(!limited.may_see_key(&key(Some("b.example c.example"))));
        assert!(!limited.may_see_key(&key(None)));
        let unlimited = Caller {
            domains: None,
            ..limited.clone()
        };
        assert!(unlimited.may_see_key(&key(None)) && unlimited.may_use("c.example"));
        assert!(unlimited.may_grant(&read, None).is_ok());
    }

    #[test]
    fn only_well_formed_keys_reach_the_database() {
        let key = format!("mr_0123abcd_{}", "f".repeat(SECRET_HEX));
        assert_eq!(prefix_of(&key), Some("mr_0123abcd"));
        assert_eq!(prefix_of("mr_deadbeef_wrong"), None);
        assert_eq!(prefix_of(&format!("{key}0")), None, "longer secret");
        assert_eq!(prefix_of(&format!("xx_0123abcd_{}", "f".repeat(40))), None);
        assert_eq!(prefix_of(&format!("mr_0123abc_{}", "f".repeat(40))), None);
    }

    #[test]
    fn a_limited_key_hash_covers_its_domains() {
        let key = "mr_0123abcd_secret";
        assert_ne!(digest(key, None), digest(key, Some("a.example")));
        assert_ne!(
            digest(key, Some("a.example")),
            digest(key, Some("a.example b.example"))
        );
        assert_eq!(digest(key, None), hex(&Sha256::digest(key.as_bytes())));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
