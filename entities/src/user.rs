use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub domain_id: i64,
    /// Lowercase `local@domain`.
    #[sea_orm(unique)]
    pub address: String,
    /// argon2id PHC string; never serialized.
    #[serde(skip)]
    pub password_hash: String,
    pub disabled: bool,
    /// Manages the server through the Admin UI (the API as an admin key of every
    /// domain), when signed in.
    pub admin: bool,
    pub created_at: DateTimeWithTimeZone,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
