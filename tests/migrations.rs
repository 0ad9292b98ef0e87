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

/// `m20261203_000010_mail_auth` on a database with a user made before it: the user gets
/// a Junk mailbox whose time reads back; rolled back, the mail in Junk moves to the
/// INBOX instead of going with the mailbox.
#[tokio::test]
async fn junk_mailboxes_come_with_the_mail_auth_migration_and_their_mail_survives_its_rollback() {
    use chrono::Utc;
    use mairust_entities::{domain, mailbox, mailbox_message, user};
    use sea_orm::sea_query::{Alias, Query};
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

    let dir = tempfile::tempdir().unwrap();
    let backend = common::Backend::new(dir.path());
    let db = Database::connect(&backend.db_url).await.unwrap();
    let names: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let before = names
        .iter()
        .position(|n| n == "m20261203_000010_mail_auth")
        .expect("the migration exists");
    Migrator::up(&db, Some(before as u32)).await.unwrap();

    let now = Utc::now().fixed_offset();
    let d = domain::ActiveModel {
        name: Set("old.test".into()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&db)
    .await
    .unwrap();
    // Inserted without reading the row back: this schema predates columns the
    // model has now (users.admin).
    let user_id = user::Entity::insert(user::ActiveModel {
        domain_id: Set(d.id),
        address: Set("early@old.test".into()),
        password_hash: Set("x".into()),
        disabled: Set(false),
        created_at: Set(now),
        ..Default::default()
    })
    .exec(&db)
    .await
    .unwrap()
    .last_insert_id;
    let inbox = mailbox::ActiveModel {
        user_id: Set(user_id),
        name: Set("INBOX".into()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&db)
    .await
    .unwrap();
    Migrator::up(&db, Some(1)).await.unwrap();
    let junk = mailbox::Entity::find()
        .filter(mailbox::Column::UserId.eq(user_id))
        .filter(mailbox::Column::Name.eq("Junk"))
        .one(&db)
        .await
        .unwrap()
        .expect("the migration gave the user a Junk mailbox");
    assert!((junk.created_at.to_utc() - Utc::now()).num_minutes().abs() < 5);

    // A message quarantined into Junk (the messages table through SQL: its entity is
    // of the newest schema).
    let insert = Query::insert()
        .into_table(Alias::new("messages"))
        .columns(
            [
                "id",
                "object_key",
                "size",
                "sha256",
                "attachments",
                "envelope_from",
                "envelope_to",
                "listener",
                "remote_ip",
                "received_at",
            ]
            .map(Alias::new),
        )
        .values_panic([
            "m1".into(),
            "messages/m1.eml".into(),
            1i64.into(),
            "00".into(),
            0i32.into(),
            "".into(),
            "early@old.test".into(),
            "inbound".into(),
            "127.0.0.1".into(),
            now.into(),
        ])
        .to_owned();
    db.execute(&insert).await.unwrap();
    mailbox_message::ActiveModel {
        mailbox_id: Set(junk.id),
        message_id: Set("m1".into()),
        user_id: Set(user_id),
        flags: Set(String::new()),
        tags: Set(String::new()),
        created_at: Set(now),
        deleted_at: Set(None),
        ..Default::default()
    }
    .insert(&db)
    .await
    .unwrap();

    Migrator::down(&db, Some(1)).await.unwrap();
    let entries = mailbox_message::Entity::find().all(&db).await.unwrap();
    assert_eq!(entries.len(), 1, "the quarantined message kept its entry");
    assert_eq!(entries[0].mailbox_id, inbox.id, "moved to the INBOX");
    assert!(
        mailbox::Entity::find()
            .filter(mailbox::Column::Name.eq("Junk"))
            .one(&db)
            .await
            .unwrap()
            .is_none()
    );
    db.close().await.ok();
}
