//! What the Admin UI needs: `users.admin` (users who manage the server through it),
//! `web_sessions`, the server-side sessions of signed-in users, `node_status`, each
//! node's latest health report (the dashboard shows every node sharing the database),
//! and an index on the time the dashboard counts messages by (`messages.received_at`;
//! `queue_history.at` has one).
//!
//! A session is found by the SHA-256 of its cookie's token (the token itself is never
//! stored); it ends at `expires_at`, or when unused for the configured idle time, or
//! with its user, or when the user's password is no longer the one it was opened with
//! (`credential`: a SHA-256 of the password hash then; so even a node one release older,
//! which knows nothing of sessions, ends them by changing a password).
//!
//! Additive: a node one release older never reads any of it, and the new column has a
//! default (users it adds are not admins).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Admin,
}

#[derive(DeriveIden)]
enum NodeStatus {
    Table,
    NodeId,
    Hostname,
    Version,
    StartedAt,
    UpdatedAt,
    Report,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum WebSessions {
    Table,
    Id,
    TokenHash,
    UserId,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
    Remote,
    UserAgent,
    Credential,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(boolean(Users::Admin).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebSessions::Table)
                    .col(big_pk_auto(WebSessions::Id))
                    .col(string_len_uniq(WebSessions::TokenHash, 64))
                    .col(big_integer(WebSessions::UserId))
                    .col(timestamp_with_time_zone(WebSessions::CreatedAt))
                    .col(timestamp_with_time_zone(WebSessions::LastSeenAt))
                    .col(timestamp_with_time_zone(WebSessions::ExpiresAt))
                    .col(string_len(WebSessions::Remote, 64))
                    .col(string_len(WebSessions::UserAgent, 256))
                    .col(string_len(WebSessions::Credential, 64))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebSessions::Table, WebSessions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_web_sessions_user")
                    .table(WebSessions::Table)
                    .col(WebSessions::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_web_sessions_expires")
                    .table(WebSessions::Table)
                    .col(WebSessions::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(NodeStatus::Table)
                    .col(string_len(NodeStatus::NodeId, 320).primary_key())
                    .col(string_len(NodeStatus::Hostname, 255))
                    .col(string_len(NodeStatus::Version, 64))
                    .col(timestamp_with_time_zone(NodeStatus::StartedAt))
                    .col(timestamp_with_time_zone(NodeStatus::UpdatedAt))
                    .col(text(NodeStatus::Report))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_messages_received")
                    .table(Messages::Table)
                    .col(Messages::ReceivedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_messages_received")
                    .table(Messages::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(NodeStatus::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(WebSessions::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::Admin)
                    .to_owned(),
            )
            .await
    }
}
