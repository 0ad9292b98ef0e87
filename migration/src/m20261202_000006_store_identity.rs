//! Ties the object store to its database and journals unflushed messages (SPEC M4).
//!
//! - `store_identity`: one row, the identity this database expects to find in the
//!   object store's marker object; `serve` refuses a store that is missing, empty or
//!   another database's.
//! - `unflushed_message`: SQLite's parallel commit writes a message's row before its
//!   body is known to be durable. The row transaction also journals the message here; the
//!   entry is cleared once the body is durable. Startup recovery removes only rows
//!   journalled here whose body is missing, never an acknowledged message.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StoreIdentity {
    Table,
    Id,
    StoreId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UnflushedMessages {
    Table,
    MessageId,
    ObjectKey,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StoreIdentity::Table)
                    .col(integer(StoreIdentity::Id).primary_key())
                    .col(string_len(StoreIdentity::StoreId, 64))
                    .col(timestamp_with_time_zone(StoreIdentity::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UnflushedMessages::Table)
                    .col(string_len(UnflushedMessages::MessageId, 64).primary_key())
                    .col(string_len(UnflushedMessages::ObjectKey, 255))
                    .col(timestamp_with_time_zone(UnflushedMessages::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UnflushedMessages::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(StoreIdentity::Table).to_owned())
            .await
    }
}
