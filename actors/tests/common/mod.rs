//! What the in-process tests share: a configuration on a temporary SQLite database and
//! object directory.
#![allow(dead_code)]

use mairust_actors::config::{
    Config, DatabaseConfig, FsStorageConfig, StorageBackend, StorageConfig,
};
use mairust_actors::{accounts, database};

pub mod lanes;

/// SQLite at `dir/db.sqlite`, bodies under `dir/objects` (fsync on).
pub fn config(dir: &std::path::Path) -> Config {
    let database = DatabaseConfig {
        url: format!("sqlite://{}/db.sqlite?mode=rwc", dir.display()),
        max_connections: 4,
        connect_timeout_seconds: 2,
    };
    let storage = StorageConfig {
        backend: StorageBackend::Fs,
        fs: Some(FsStorageConfig {
            path: dir.join("objects"),
            fsync: true,
        }),
        s3: None,
        limit_bytes: 0,
    };
    Config {
        server: Default::default(),
        smtp: Default::default(),
        http: Default::default(),
        database,
        storage,
        health: Default::default(),
        logging: Default::default(),
        api: Default::default(),
        hooks: Vec::new(),
        hook_policy: Default::default(),
        queue: Default::default(),
        delivery: Default::default(),
        audit: Default::default(),
        retention: Default::default(),
        telemetry: Default::default(),
        auth: Default::default(),
        dkim: Default::default(),
        mail_auth: Default::default(),
        spam: Default::default(),
        send_limits: Default::default(),
    }
}

/// The configuration's database, migrated, with the domain example.test and, with
/// `bob`, the user bob@example.test.
pub async fn database(config: &Config, bob: bool) -> sea_orm::DatabaseConnection {
    let db = database::connect(&config.database).await.unwrap();
    database::migrate_up(&db).await.unwrap();
    if bob {
        accounts::add_domain(&db, "example.test").await.unwrap();
        accounts::add_user(&db, "bob@example.test", "pw")
            .await
            .unwrap();
    }
    db
}
