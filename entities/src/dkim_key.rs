use sea_orm::entity::prelude::*;
use serde::Serialize;

/// A DKIM signing key of a local domain. The private key is kept sealed; it is never
/// serialised.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "dkim_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub domain_id: i64,
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// Base64 of the public key as the DNS record's `p=` holds it.
    pub public_key: String,
    /// Nonce and AES-256-GCM ciphertext of the PKCS#8 private key.
    #[serde(skip)]
    pub sealed_key: Vec<u8>,
    pub created_at: DateTimeWithTimeZone,
    pub signs_from: DateTimeWithTimeZone,
    pub signs_until: Option<DateTimeWithTimeZone>,
    pub publish_until: Option<DateTimeWithTimeZone>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
