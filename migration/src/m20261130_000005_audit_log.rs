//! The audit log's database copy (SPEC O5): security events readable by admins through
//! the API and pruned after `audit.retention_days`. The append-only file is the other copy.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Node,
    Event,
    Outcome,
    Actor,
    Remote,
    Target,
    Details,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(big_pk_auto(AuditLog::Id))
                    .col(timestamp_with_time_zone(AuditLog::At))
                    .col(string_len(AuditLog::Node, 128))
                    .col(string_len(AuditLog::Event, 64))
                    .col(string_len(AuditLog::Outcome, 16))
                    .col(string_len(AuditLog::Actor, 320))
                    .col(string_len_null(AuditLog::Remote, 64))
                    .col(text_null(AuditLog::Target))
                    .col(text(AuditLog::Details))
                    .to_owned(),
            )
            .await?;
        // Pruning deletes by age; reads filter by event.
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_log_at")
                    .table(AuditLog::Table)
                    .col(AuditLog::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_log_event")
                    .table(AuditLog::Table)
                    .col(AuditLog::Event)
                    .col(AuditLog::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditLog::Table).to_owned())
            .await
    }
}
