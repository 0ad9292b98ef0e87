//! REST API keys (SPEC A2): `mr_<prefix>_<secret>`, 128 random bits in the secret,
//! shown once. The database keeps the prefix (to find the key and to show it in lists)
//! and a SHA-256 of the whole key, compared in constant time.

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

use crate::storage::envelope::hex;

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
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
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
    #[error("{0}")]
    Invalid(String),
    #[error("no API key with id {0}")]
    NotFound(i64),
    #[error(transparent)]
    Db(#[from] DbErr),
}

fn random_hex(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

fn digest(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
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

/// Creates a key; the returned `key` is shown once and never stored.
pub async fn create(
    db: &DatabaseConnection,
    name: &str,
    scopes: &BTreeSet<Scope>,
) -> Result<NewKey, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 255 {
        return Err(KeyError::Invalid("name must be 1 to 255 characters".into()));
    }
    if scopes.is_empty() {
        return Err(KeyError::Invalid("at least one scope is needed".into()));
    }
    // uuid v4 carries 122 random bits per 32 hex digits: the secret has 32 + 8 more.
    let prefix = format!("mr_{}", random_hex(8));
    let key = format!("{prefix}_{}", random_hex(40));
    let record = api_key::ActiveModel {
        name: Set(name.to_string()),
        prefix: Set(prefix),
        secret_hash: Set(digest(&key)),
        scopes: Set(scopes_text(scopes)),
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

/// Equal-length comparison that does not stop at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The caller a bearer key belongs to, or `None` for an unknown, malformed or revoked
/// key. Records when the key was last used (at most once a minute).
pub async fn verify(db: &DatabaseConnection, presented: &str) -> Result<Option<Caller>, DbErr> {
    let Some(prefix) = presented
        .rsplit_once('_')
        .map(|(p, _)| p)
        .filter(|p| p.starts_with("mr_") && p.len() == 11)
    else {
        return Ok(None);
    };
    let Some(key) = api_key::Entity::find()
        .filter(api_key::Column::Prefix.eq(prefix))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if key.revoked_at.is_some() || !same(&key.secret_hash, &digest(presented)) {
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
        };
        assert!(Scope::ALL.iter().all(|s| caller.has(*s)));
        let reader = Caller {
            key_id: 2,
            name: "r".into(),
            scopes: parse_scopes("read bogus"),
        };
        assert!(reader.has(Scope::Read) && !reader.has(Scope::Write));
        assert!("root".parse::<Scope>().is_err());
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
