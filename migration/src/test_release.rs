//! Test builds only (feature `test-migrations`): two migrations of a pretend next
//! release for the rolling-upgrade tests, chosen by `MAIRUST_TEST_EXTRA_MIGRATIONS`
//! (`additive`, `breaking`). Each adds a table of its own; what differs is the
//! [`crate::Compat`] the catalogue declares for it.

use sea_orm_migration::prelude::*;

/// A migration that creates (and on the way down drops) one table with a text key.
pub struct AddTable {
    pub name: &'static str,
    pub table: &'static str,
}

impl MigrationName for AddTable {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(self.table))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new(self.table)).to_owned())
            .await
    }
}

pub const ADDITIVE: AddTable = AddTable {
    name: "m99999999_000900_test_additive",
    table: "rolling_probe",
};

pub const BREAKING: AddTable = AddTable {
    name: "m99999999_000901_test_breaking",
    table: "rolling_break",
};
