use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "mailbox_messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub mailbox_id: i64,
    pub message_id: String,
    pub user_id: i64,
    /// Space-separated IMAP-style flags (`\Seen` ...).
    pub flags: String,
    /// Space-separated tags.
    pub tags: String,
    pub created_at: DateTimeWithTimeZone,
    /// Soft delete (SPEC M7).
    pub deleted_at: Option<DateTimeWithTimeZone>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
