//! The outbound queue (SPEC M6): one entry per queued message, one row per recipient
//! with its own status, and the delivery history kept apart from the live entries so
//! finished entries can be deleted while their story stays.
//!
//! An entry points at its `messages` row (the body stays in the object store); deleting
//! the message deletes its entry, and deleting an entry deletes its recipient rows.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum QueueEntries {
    Table,
    Id,
    MessageId,
    EnvelopeFrom,
    CreatedAt,
    ExpiresAt,
    NextAttemptAt,
    Attempts,
    LeaseOwner,
    LeaseUntil,
}

#[derive(DeriveIden)]
enum QueueRecipients {
    Table,
    Id,
    EntryId,
    Address,
    Domain,
    Status,
    Attempts,
    NextAttemptAt,
    LastReply,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum QueueHistory {
    Table,
    Id,
    EntryId,
    MessageId,
    EnvelopeFrom,
    Recipient,
    Outcome,
    Attempt,
    Reply,
    RemoteHost,
    NodeId,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QueueEntries::Table)
                    .col(string_len(QueueEntries::Id, 36).primary_key())
                    .col(string_len(QueueEntries::MessageId, 36))
                    .col(text(QueueEntries::EnvelopeFrom))
                    .col(timestamp_with_time_zone(QueueEntries::CreatedAt))
                    .col(timestamp_with_time_zone(QueueEntries::ExpiresAt))
                    .col(timestamp_with_time_zone(QueueEntries::NextAttemptAt))
                    .col(integer(QueueEntries::Attempts).default(0))
                    .col(string_len_null(QueueEntries::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(QueueEntries::LeaseUntil))
                    .foreign_key(
                        ForeignKey::create()
                            .from(QueueEntries::Table, QueueEntries::MessageId)
                            .to(Messages::Table, Messages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_queue_entries_due")
                    .table(QueueEntries::Table)
                    .col(QueueEntries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_queue_entries_created")
                    .table(QueueEntries::Table)
                    .col(QueueEntries::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_queue_entries_message")
                    .table(QueueEntries::Table)
                    .col(QueueEntries::MessageId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QueueRecipients::Table)
                    .col(big_pk_auto(QueueRecipients::Id))
                    .col(string_len(QueueRecipients::EntryId, 36))
                    .col(string_len(QueueRecipients::Address, 320))
                    .col(string_len(QueueRecipients::Domain, 255))
                    .col(string_len(QueueRecipients::Status, 16))
                    .col(integer(QueueRecipients::Attempts).default(0))
                    .col(timestamp_with_time_zone(QueueRecipients::NextAttemptAt))
                    .col(text_null(QueueRecipients::LastReply))
                    .col(timestamp_with_time_zone(QueueRecipients::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(QueueRecipients::Table, QueueRecipients::EntryId)
                            .to(QueueEntries::Table, QueueEntries::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_queue_recipients_entry")
                    .table(QueueRecipients::Table)
                    .col(QueueRecipients::EntryId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QueueHistory::Table)
                    .col(big_pk_auto(QueueHistory::Id))
                    .col(string_len(QueueHistory::EntryId, 36))
                    .col(string_len(QueueHistory::MessageId, 36))
                    .col(text(QueueHistory::EnvelopeFrom))
                    .col(string_len(QueueHistory::Recipient, 320))
                    .col(string_len(QueueHistory::Outcome, 16))
                    .col(integer(QueueHistory::Attempt))
                    .col(text_null(QueueHistory::Reply))
                    .col(string_len_null(QueueHistory::RemoteHost, 255))
                    .col(string_len(QueueHistory::NodeId, 128))
                    .col(timestamp_with_time_zone(QueueHistory::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_queue_history_entry")
                    .table(QueueHistory::Table)
                    .col(QueueHistory::EntryId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_queue_history_at")
                    .table(QueueHistory::Table)
                    .col(QueueHistory::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            QueueHistory::Table.into_iden(),
            QueueRecipients::Table.into_iden(),
            QueueEntries::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
