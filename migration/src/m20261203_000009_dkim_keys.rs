//! `dkim_keys`: the DKIM signing keys of local domains (RFC 6376, RFC 8463). The private
//! key is stored sealed (AES-256-GCM under the node's `dkim.master_key_file`, bound to
//! its domain and selector), never in clear. A key signs from `signs_from` until
//! `signs_until` (a rotation sets both, on the new and the old key) and its DNS record
//! must stay published until `publish_until`; then the row is removed. Removing the
//! domain removes its keys.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DkimKeys {
    Table,
    Id,
    DomainId,
    Selector,
    Algorithm,
    PublicKey,
    SealedKey,
    CreatedAt,
    SignsFrom,
    SignsUntil,
    PublishUntil,
}

#[derive(DeriveIden)]
enum Domains {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DkimKeys::Table)
                    .col(big_integer(DkimKeys::Id).primary_key().auto_increment())
                    .col(big_integer(DkimKeys::DomainId))
                    // A DNS label (RFC 6376 §3.1): at most 63 octets each, dots between.
                    .col(string_len(DkimKeys::Selector, 253))
                    .col(string_len(DkimKeys::Algorithm, 16))
                    .col(text(DkimKeys::PublicKey))
                    .col(blob(DkimKeys::SealedKey))
                    .col(timestamp_with_time_zone(DkimKeys::CreatedAt))
                    .col(timestamp_with_time_zone(DkimKeys::SignsFrom))
                    .col(timestamp_with_time_zone_null(DkimKeys::SignsUntil))
                    .col(timestamp_with_time_zone_null(DkimKeys::PublishUntil))
                    .foreign_key(
                        ForeignKey::create()
                            .from(DkimKeys::Table, DkimKeys::DomainId)
                            .to(Domains::Table, Domains::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .index(
                        Index::create()
                            .name("ux_dkim_keys_domain_selector")
                            .col(DkimKeys::DomainId)
                            .col(DkimKeys::Selector)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DkimKeys::Table).to_owned())
            .await
    }
}
