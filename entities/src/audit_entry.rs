use sea_orm::entity::prelude::*;
use serde::Serialize;

/// One security event (SPEC O5).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeWithTimeZone,
    /// The node that recorded it.
    pub node: String,
    /// e.g. `api_key.create`, `auth.failure`, `domain.delete`.
    pub event: String,
    /// success or failure.
    pub outcome: String,
    /// Who did it: `api-key:NAME#ID`, `cli:USER`, `smtp:ADDRESS`.
    pub actor: String,
    /// The client's address, when there was a client.
    pub remote: Option<String>,
    /// What it was done to (a domain, an address, a key id, a hook id).
    pub target: Option<String>,
    /// A JSON object with the rest.
    pub details: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
