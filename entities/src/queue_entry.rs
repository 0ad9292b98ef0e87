use sea_orm::entity::prelude::*;
use serde::Serialize;

/// One message waiting in the outbound queue (SPEC M6).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "queue_entries")]
pub struct Model {
    /// UUIDv7.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The `messages` row whose object is the body to send.
    pub message_id: String,
    /// Reverse-path; empty for the null sender (a bounce, never bounced itself).
    pub envelope_from: String,
    pub created_at: DateTimeWithTimeZone,
    /// After this, pending recipients are given up and bounced (`queue.max_age`).
    pub expires_at: DateTimeWithTimeZone,
    pub next_attempt_at: DateTimeWithTimeZone,
    /// Delivery attempts so far (they set the retry delay).
    pub attempts: i32,
    /// The node that claimed the entry, while its lease runs.
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTimeWithTimeZone>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
