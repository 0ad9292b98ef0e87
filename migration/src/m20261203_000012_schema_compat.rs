//! Rolling upgrades (SPEC O10): `schema_compat` records, for each applied migration,
//! whether binaries that predate it keep working on the schema it leaves (additive: a
//! new table, a nullable or defaulted column) or not (breaking). A node that finds
//! migrations it does not know serves only when every one of them is recorded here as
//! additive; `mairust migrate` writes the rows after applying.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SchemaCompat {
    Table,
    Version,
    Additive,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SchemaCompat::Table)
                    .if_not_exists()
                    .col(string(SchemaCompat::Version).primary_key())
                    .col(boolean(SchemaCompat::Additive))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SchemaCompat::Table).to_owned())
            .await
    }
}
