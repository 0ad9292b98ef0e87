use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    /// UUIDv7, so ids sort by arrival.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Key of the body in the object store.
    pub object_key: String,
    pub size: i64,
    /// Hex SHA-256 of the stored body, checked by `db check`.
    pub sha256: String,
    /// The Message-ID header, without angle brackets.
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from_addr: Option<String>,
    pub to_addrs: Option<String>,
    pub date: Option<DateTimeWithTimeZone>,
    pub attachments: i32,
    /// Reverse-path; empty for the null sender.
    pub envelope_from: String,
    /// Forward-paths, comma-separated.
    pub envelope_to: String,
    pub listener: String,
    pub remote_ip: String,
    pub received_at: DateTimeWithTimeZone,
    /// The account that submitted the message (an SMTP AUTH user, or the sender user of
    /// `POST /send`); `None` for mail from other servers (SPEC S5).
    pub submitted_by: Option<String>,
    /// What the checks of mail from other servers found (SPF, DKIM, DMARC, ARC and the
    /// action taken), as JSON; `None` for mail our users submitted or not checked.
    pub authentication: Option<String>,
    /// What rspamd said (score, required score, action, symbols), as JSON; `None` when
    /// not scanned.
    pub spam: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
