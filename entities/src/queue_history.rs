use sea_orm::entity::prelude::*;
use serde::Serialize;

/// One delivery attempt's outcome for one recipient; kept after the entry is gone.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "queue_history")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub entry_id: String,
    pub message_id: String,
    pub envelope_from: String,
    pub recipient: String,
    /// `delivered`, `deferred`, `bounced`, `expired` or `deleted`.
    pub outcome: String,
    pub attempt: i32,
    pub reply: Option<String>,
    pub remote_host: Option<String>,
    pub node_id: String,
    pub at: DateTimeWithTimeZone,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
