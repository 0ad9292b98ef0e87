//! `messages.submitted_by`: the account that submitted a message (SPEC S5), so every
//! message sent by one of our users can be traced to that account. Nullable: mail from
//! other servers has none, and a node one version older keeps inserting rows without it
//! during a rolling upgrade.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    SubmittedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    // Long enough for any address (64 + 1 + 255).
                    .add_column(string_len_null(Messages::SubmittedBy, 320))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .drop_column(Messages::SubmittedBy)
                    .to_owned(),
            )
            .await
    }
}
