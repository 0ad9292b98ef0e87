//! Send limits of authenticated accounts, shared by every node through the database:
//! `send_counters` counts each account's and each domain's messages and recipients per
//! hour window (rows older than two hours are removed by the janitor), and
//! `send_limit_overrides` holds a user's own limits where the configured ones do not
//! apply (set through the API). A node one version older never reads either.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SendCounters {
    Table,
    Scope,
    Subject,
    WindowStart,
    Messages,
    Recipients,
}

#[derive(DeriveIden)]
enum SendLimitOverrides {
    Table,
    UserId,
    MessagesPerHour,
    RecipientsPerHour,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SendCounters::Table)
                    .col(string_len(SendCounters::Scope, 16))
                    .col(string_len(SendCounters::Subject, 320))
                    // The hour: seconds since the epoch / 3600.
                    .col(big_integer(SendCounters::WindowStart))
                    .col(big_integer(SendCounters::Messages))
                    .col(big_integer(SendCounters::Recipients))
                    .primary_key(
                        Index::create()
                            .col(SendCounters::Scope)
                            .col(SendCounters::Subject)
                            .col(SendCounters::WindowStart),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SendLimitOverrides::Table)
                    .col(big_integer(SendLimitOverrides::UserId).primary_key())
                    .col(big_integer_null(SendLimitOverrides::MessagesPerHour))
                    .col(big_integer_null(SendLimitOverrides::RecipientsPerHour))
                    .foreign_key(
                        ForeignKey::create()
                            .from(SendLimitOverrides::Table, SendLimitOverrides::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SendLimitOverrides::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(SendCounters::Table).to_owned())
            .await
    }
}
