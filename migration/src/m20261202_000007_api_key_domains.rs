//! API keys limited to some domains (SPEC S4): `api_keys.domains`, the space-separated
//! lower-case domain names a key may act on; NULL for a key of every domain.
//!
//! A limited key's stored hash covers its domain list too, so a node of the previous
//! version (which knows no `domains` column and hashes the key alone) refuses such a key
//! with 401 instead of treating it as a key of every domain during a rolling update. The
//! down step revokes limited keys before it drops the column, for the same reason: a
//! rollback never widens a key.

use sea_orm_migration::sea_orm::prelude::DateTimeUtc;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Domains,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(text_null(ApiKeys::Domains))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Written as the entities write timestamps (not the database's CURRENT_TIMESTAMP,
        // which SQLite stores without an offset).
        let now: DateTimeUtc = std::time::SystemTime::now().into();
        manager
            .exec_stmt(
                Query::update()
                    .table(ApiKeys::Table)
                    .value(ApiKeys::RevokedAt, now.fixed_offset())
                    .and_where(Expr::col(ApiKeys::Domains).is_not_null())
                    .and_where(Expr::col(ApiKeys::RevokedAt).is_null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(ApiKeys::Domains)
                    .to_owned(),
            )
            .await
    }
}
