use sea_orm::entity::prelude::*;
use serde::Serialize;

/// A signed-in user's browser session. The cookie's token is never stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "web_sessions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Hex SHA-256 of the session token.
    #[sea_orm(unique)]
    #[serde(skip)]
    pub token_hash: String,
    pub user_id: i64,
    pub created_at: DateTimeWithTimeZone,
    pub last_seen_at: DateTimeWithTimeZone,
    /// The end of the session however much it is used.
    pub expires_at: DateTimeWithTimeZone,
    /// The client address at sign-in.
    pub remote: String,
    /// The browser's User-Agent at sign-in (first 256 characters).
    pub user_agent: String,
    /// Hex SHA-256 of the user's password hash at sign-in: another password ends the
    /// session.
    #[serde(skip)]
    pub credential: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
