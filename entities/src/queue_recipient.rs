use sea_orm::entity::prelude::*;
use serde::Serialize;

/// One recipient of a queue entry and where its delivery stands.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "queue_recipients")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub entry_id: String,
    pub address: String,
    /// Lower-case domain of the address: what routing and MX lookup use.
    pub domain: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTimeWithTimeZone,
    /// The last reply (or connection error) for this recipient.
    pub last_reply: Option<String>,
    pub updated_at: DateTimeWithTimeZone,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
