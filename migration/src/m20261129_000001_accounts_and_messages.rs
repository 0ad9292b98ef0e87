//! Accounts (domains, users, mailboxes) and received messages.
//!
//! A message is stored once (`messages`, one object in the store) and indexed in each
//! recipient's mailbox (`mailbox_messages`), as SPEC M5 asks.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Domains {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    DomainId,
    Address,
    PasswordHash,
    Disabled,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Mailboxes {
    Table,
    Id,
    UserId,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    ObjectKey,
    Size,
    Sha256,
    MessageId,
    Subject,
    FromAddr,
    ToAddrs,
    Date,
    Attachments,
    EnvelopeFrom,
    EnvelopeTo,
    Listener,
    RemoteIp,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum MailboxMessages {
    Table,
    Id,
    MailboxId,
    MessageId,
    UserId,
    Flags,
    Tags,
    CreatedAt,
    DeletedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Domains::Table)
                    .col(big_pk_auto(Domains::Id))
                    .col(string_len_uniq(Domains::Name, 255))
                    .col(timestamp_with_time_zone(Domains::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(big_pk_auto(Users::Id))
                    .col(big_integer(Users::DomainId))
                    .col(string_len_uniq(Users::Address, 320))
                    .col(string(Users::PasswordHash))
                    .col(boolean(Users::Disabled).default(false))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Users::Table, Users::DomainId)
                            .to(Domains::Table, Domains::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Mailboxes::Table)
                    .col(big_pk_auto(Mailboxes::Id))
                    .col(big_integer(Mailboxes::UserId))
                    .col(string_len(Mailboxes::Name, 255))
                    .col(timestamp_with_time_zone(Mailboxes::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Mailboxes::Table, Mailboxes::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .index(
                        Index::create()
                            .name("ux_mailboxes_user_name")
                            .col(Mailboxes::UserId)
                            .col(Mailboxes::Name)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .col(string_len(Messages::Id, 36).primary_key())
                    .col(string(Messages::ObjectKey))
                    .col(big_integer(Messages::Size))
                    .col(string_len(Messages::Sha256, 64))
                    .col(text_null(Messages::MessageId))
                    .col(text_null(Messages::Subject))
                    .col(text_null(Messages::FromAddr))
                    .col(text_null(Messages::ToAddrs))
                    .col(timestamp_with_time_zone_null(Messages::Date))
                    .col(integer(Messages::Attachments))
                    .col(text(Messages::EnvelopeFrom))
                    .col(text(Messages::EnvelopeTo))
                    .col(string_len(Messages::Listener, 32))
                    .col(string_len(Messages::RemoteIp, 64))
                    .col(timestamp_with_time_zone(Messages::ReceivedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_messages_message_id")
                    .table(Messages::Table)
                    .col(Messages::MessageId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MailboxMessages::Table)
                    .col(big_pk_auto(MailboxMessages::Id))
                    .col(big_integer(MailboxMessages::MailboxId))
                    .col(string_len(MailboxMessages::MessageId, 36))
                    .col(big_integer(MailboxMessages::UserId))
                    .col(text(MailboxMessages::Flags).default(""))
                    .col(text(MailboxMessages::Tags).default(""))
                    .col(timestamp_with_time_zone(MailboxMessages::CreatedAt))
                    .col(timestamp_with_time_zone_null(MailboxMessages::DeletedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(MailboxMessages::Table, MailboxMessages::MailboxId)
                            .to(Mailboxes::Table, Mailboxes::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(MailboxMessages::Table, MailboxMessages::MessageId)
                            .to(Messages::Table, Messages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_mailbox_messages_mailbox")
                    .table(MailboxMessages::Table)
                    .col(MailboxMessages::MailboxId)
                    .col(MailboxMessages::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_mailbox_messages_message")
                    .table(MailboxMessages::Table)
                    .col(MailboxMessages::MessageId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            MailboxMessages::Table.into_iden(),
            Messages::Table.into_iden(),
            Mailboxes::Table.into_iden(),
            Users::Table.into_iden(),
            Domains::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
