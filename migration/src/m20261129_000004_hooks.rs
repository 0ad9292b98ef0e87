//! Hooks created through the API (SPEC M9); hooks from config.yaml are not stored.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Hooks {
    Table,
    Id,
    Event,
    Url,
    Secret,
    TimeoutMs,
    OnTimeout,
    OnError,
    BreakerFailures,
    BreakerCooldownSeconds,
    Enabled,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Hooks::Table)
                    .col(string_len(Hooks::Id, 64).primary_key())
                    .col(string_len(Hooks::Event, 16))
                    .col(text(Hooks::Url))
                    .col(text(Hooks::Secret))
                    .col(big_integer(Hooks::TimeoutMs))
                    .col(string_len(Hooks::OnTimeout, 16))
                    .col(string_len(Hooks::OnError, 16))
                    .col(integer(Hooks::BreakerFailures))
                    .col(double(Hooks::BreakerCooldownSeconds))
                    .col(boolean(Hooks::Enabled))
                    .col(timestamp_with_time_zone(Hooks::CreatedAt))
                    .col(timestamp_with_time_zone(Hooks::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Hooks::Table).to_owned())
            .await
    }
}
