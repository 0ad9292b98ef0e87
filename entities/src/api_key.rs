use sea_orm::entity::prelude::*;
use serde::Serialize;

/// A REST API key (SPEC A2). The key itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    /// The public part of the key (`mr_xxxxxxxx`), shown in lists and used to find it.
    pub prefix: String,
    /// Hex SHA-256 of the whole key (of the domain list and the key for a key limited
    /// to some domains).
    #[serde(skip)]
    pub secret_hash: String,
    /// Space-separated: read, write, send, admin.
    pub scopes: String,
    /// Space-separated lower-case domain names the key is limited to; `None`: every
    /// domain.
    pub domains: Option<String>,
    pub created_at: DateTimeWithTimeZone,
    pub last_used_at: Option<DateTimeWithTimeZone>,
    pub revoked_at: Option<DateTimeWithTimeZone>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
