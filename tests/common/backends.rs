//! Where a test's data lives: SQLite + fs in its temporary directory by default, or a
//! fresh PostgreSQL database and S3 prefix when the environment names a server of each.

use std::io::Write;
use std::path::Path;

use sea_orm::{ConnectionTrait, Database};

use super::block_on;

/// Where this test's data lives.
pub struct Backend {
    pub db_url: String,
    pub storage_yaml: String,
    /// PostgreSQL: (server URL without database, database name) to drop at the end.
    pg: Option<(String, String)>,
    pub s3: Option<S3Target>,
}

#[derive(Clone)]
pub struct S3Target {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
}

pub fn postgres_url() -> Option<String> {
    std::env::var("MAIRUST_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

pub fn s3_endpoint() -> Option<String> {
    std::env::var("MAIRUST_TEST_S3_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
}

/// `postgres://u@h:p/db` → (`postgres://u@h:p`, `db`).
fn split_pg(url: &str) -> (String, String) {
    let (base, db) = url.rsplit_once('/').expect("postgres URL with a database");
    (
        base.to_string(),
        db.split('?').next().unwrap_or("").to_string(),
    )
}

impl Backend {
    pub fn new(dir: &Path) -> Backend {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (db_url, pg) = match postgres_url() {
            Some(url) => {
                let (base, admin_db) = split_pg(&url);
                let name = format!("mairust_t_{}", &id[..16]);
                block_on(async {
                    let admin = Database::connect(format!("{base}/{admin_db}"))
                        .await
                        .expect("postgres");
                    admin
                        .execute_unprepared(&format!("CREATE DATABASE {name}"))
                        .await
                        .expect("create test database");
                    admin.close().await.ok();
                });
                (
                    format!("{base}/{name}"),
                    Some((format!("{base}/{admin_db}"), name)),
                )
            }
            None => (
                format!("sqlite://{}/mairust.db?mode=rwc", dir.display()),
                None,
            ),
        };
        let (storage_yaml, s3) = match s3_endpoint() {
            Some(endpoint) => {
                let bucket =
                    std::env::var("MAIRUST_TEST_S3_BUCKET").unwrap_or("mairust-test".into());
                let target = S3Target {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    prefix: format!("t-{}", &id[..16]),
                };
                (s3_yaml(&target), Some(target))
            }
            None => (
                format!(
                    "storage:\n  backend: fs\n  fs:\n    path: {}/objects\n",
                    dir.display()
                ),
                None,
            ),
        };
        let backend = Backend {
            db_url,
            storage_yaml,
            pg,
            s3,
        };
        backend.record_use();
        backend
    }

    /// Appends `postgres|sqlite s3|fs` to `CARGO_TARGET_TMPDIR/backends.txt`: `.ci/run`
    /// checks that its PostgreSQL + S3 pass used nothing else.
    fn record_use(&self) {
        let line = format!(
            "{} {}\n",
            if self.pg.is_some() {
                "postgres"
            } else {
                "sqlite"
            },
            if self.s3.is_some() { "s3" } else { "fs" }
        );
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("backends.txt");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("target tmp dir");
        // One short write on a file opened for append: lines of parallel tests stay whole.
        file.write_all(line.as_bytes()).expect("record the backend");
    }

    /// The same database and object store for another node; dropping it drops nothing.
    pub fn shared(&self) -> Backend {
        Backend {
            db_url: self.db_url.clone(),
            storage_yaml: self.storage_yaml.clone(),
            pg: None,
            s3: self.s3.clone(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// PostgreSQL only: refuse new connections and end the server's (a database outage).
    pub fn pg_block(&self, blocked: bool) {
        let (admin, name) = self.pg.clone().expect("postgres backend");
        block_on(async move {
            let db = Database::connect(admin).await.expect("postgres admin");
            db.execute_unprepared(&format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS {}",
                !blocked
            ))
            .await
            .unwrap();
            if blocked {
                db.execute_unprepared(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                ))
                .await
                .unwrap();
            }
            db.close().await.ok();
        });
    }
}

pub fn s3_yaml(t: &S3Target) -> String {
    format!(
        "storage:\n  backend: s3\n  s3:\n    bucket: {}\n    endpoint: {}\n    region: us-east-1\n    access_key_id: test\n    secret_access_key: test\n    allow_http: true\n    prefix: {}\n",
        t.bucket, t.endpoint, t.prefix
    )
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            block_on(async move {
                if let Ok(db) = Database::connect(admin).await {
                    let _ = db
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    db.close().await.ok();
                }
            });
        }
    }
}

/// Whether a test's backend (`what`, e.g. "PostgreSQL") is there. When it is not, the
/// test is skipped with a `skipped:` line, unless `MAIRUST_TEST_REQUIRE_BACKENDS=1`
/// (`.ci/run` sets it in the PostgreSQL + S3 pass): there a skip would hide that the
/// test never ran, so it fails instead.
pub fn backend_available(available: bool, what: &str) -> bool {
    if !available {
        assert!(
            std::env::var("MAIRUST_TEST_REQUIRE_BACKENDS").as_deref() != Ok("1"),
            "MAIRUST_TEST_REQUIRE_BACKENDS=1 but this test's backend is missing: {what}"
        );
        eprintln!("skipped: needs {what}");
    }
    available
}
