//! Every migration goes up, down to zero, and up again (STYLE 10), on SQLite and, when
//! configured, PostgreSQL.

mod common;

use mairust_migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database};

#[tokio::test]
async fn every_up_then_every_down_then_up_again() {
    let dir = tempfile::tempdir().unwrap();
    let backend = common::Backend::new(dir.path());
    let db = Database::connect(&backend.db_url).await.unwrap();
    let total = Migrator::migrations().len();
    let tables = |db: &sea_orm::DatabaseConnection| {
        let sql = if backend.is_postgres() {
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> 'seaql_migrations'"
        } else {
            "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name NOT IN ('seaql_migrations', 'sqlite_sequence')"
        };
        let db = db.clone();
        async move {
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    sql,
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        }
    };
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(
        Migrator::get_applied_migrations(&db).await.unwrap().len(),
        total
    );
    assert!(tables(&db).await >= 5);
    for _ in 0..total {
        Migrator::down(&db, Some(1)).await.unwrap();
    }
    assert_eq!(
        Migrator::get_applied_migrations(&db).await.unwrap().len(),
        0
    );
    assert_eq!(tables(&db).await, 0, "down steps left tables behind");
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(&db).await.unwrap().len(),
        0
    );
    db.close().await.ok();
}
