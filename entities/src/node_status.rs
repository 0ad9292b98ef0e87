use sea_orm::entity::prelude::*;
use serde::Serialize;

/// A node's latest health report, written by the node every few seconds while it runs
/// (the dashboard shows every node sharing the database).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "node_status")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub node_id: String,
    pub hostname: String,
    pub version: String,
    pub started_at: DateTimeWithTimeZone,
    pub updated_at: DateTimeWithTimeZone,
    /// The node's `/health` report (JSON).
    pub report: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
