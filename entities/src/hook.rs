use sea_orm::entity::prelude::*;
use serde::Serialize;

/// A hook created through the API (SPEC M9).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "hooks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// pre_receive, post_receive or pre_send.
    pub event: String,
    pub url: String,
    #[serde(skip)]
    pub secret: String,
    pub timeout_ms: i64,
    /// allow, reject or tempfail.
    pub on_timeout: String,
    pub on_error: String,
    pub breaker_failures: i32,
    pub breaker_cooldown_seconds: f64,
    pub enabled: bool,
    pub created_at: DateTimeWithTimeZone,
    pub updated_at: DateTimeWithTimeZone,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
