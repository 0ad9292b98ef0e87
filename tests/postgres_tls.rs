//! PostgreSQL over TLS (issue 17): a PostgreSQL the test starts with `ssl=on` and a
//! server certificate from a test CA (made with the `openssl` command).
//! `sslmode=verify-full` with that CA works, and PostgreSQL itself (`pg_stat_ssl`) says
//! the server's connections are encrypted; a wrong CA or a wrong host name is refused
//! with an error that says why.

mod common;

use std::path::{Path, PathBuf};

use common::postgres::OwnPostgres;
use common::{Options, TestServer, deliver_to_bob};
use sea_orm::{ConnectionTrait, Database, Statement};

struct TlsPostgres {
    pg: OwnPostgres,
    ca: PathBuf,
    other_ca: PathBuf,
    _certs: tempfile::TempDir,
}

fn start() -> Option<TlsPostgres> {
    if !OwnPostgres::available() {
        return None;
    }
    let certs = tempfile::tempdir().unwrap();
    let ca = common::certs::ca(certs.path(), "test-ca");
    let other = common::certs::ca(certs.path(), "other-ca");
    let (crt, key) = common::certs::signed(certs.path(), &ca, "server");
    let pg = OwnPostgres::start(
        &[
            "ssl=on".into(),
            // A second address, which the certificate does not name.
            "listen_addresses=127.0.0.1,127.0.0.2".into(),
            "ssl_cert_file=server.crt".into(),
            "ssl_key_file=server.key".into(),
        ],
        &[("server.crt", &crt), ("server.key", &key)],
    );
    Some(TlsPostgres {
        pg,
        ca: ca.0,
        other_ca: other.0,
        _certs: certs,
    })
}

impl TlsPostgres {
    fn url(&self, host: &str, mode: &str, ca: &Path) -> String {
        format!(
            "{}&sslrootcert={}",
            self.url_without_ca(host, mode),
            ca.display()
        )
    }

    fn url_without_ca(&self, host: &str, mode: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?sslmode={mode}",
            self.pg.port
        )
    }
}

/// A prepared (not started) test server on `db_url`, with the usual accounts.
fn server_on(db_url: &str) -> TestServer {
    let mut server = TestServer::prepare(Options::default());
    server.backend.db_url = db_url.to_string();
    server.reconfigure(Options::default());
    server
}

#[tokio::test]
async fn verify_full_with_the_right_ca_encrypts_every_connection() {
    let Some(tls) = start() else { return };
    let url = tls.url("localhost", "verify-full", &tls.ca);
    let mut server = server_on(&url);
    server.cli_ok(&["domain", "add", common::DOMAIN], None);
    server.cli_ok(
        &["user", "add", "bob@example.test", "--password-stdin"],
        Some(common::PASSWORD),
    );
    server.spawn();
    assert_eq!(deliver_to_bob(&server, "tls@remote.test").await.code, 250);
    assert_eq!(server.messages_with_id("tls@remote.test").await.len(), 1);

    // PostgreSQL's own view: every client connection to this database is TLS.
    let db = Database::connect(tls.url("127.0.0.1", "verify-full", &tls.ca))
        .await
        .expect("verify-full by IP address (in the certificate)");
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) FILTER (WHERE s.ssl) AS tls, count(*) AS total \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = 'postgres' AND a.backend_type = 'client backend'",
        ))
        .await
        .unwrap()
        .unwrap();
    let (encrypted, total): (i64, i64) = (
        row.try_get("", "tls").unwrap(),
        row.try_get("", "total").unwrap(),
    );
    assert!(total >= 2, "the server holds connections: {total}");
    assert_eq!(encrypted, total, "unencrypted connections");
    db.close().await.ok();
}

#[tokio::test]
async fn wrong_ca_or_host_is_refused_with_a_clear_error() {
    let Some(tls) = start() else { return };
    // Another CA: the server's certificate is not trusted.
    let server = server_on(&tls.url("localhost", "verify-full", &tls.other_ca));
    let out = server.cli(&["migrate", "status"], None);
    let text = common::output(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot connect to the database"), "{text}");
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    // serve refuses to start, saying the same.
    let (status, output) = server.spawn_refused(std::time::Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        output.contains("cannot connect to the database"),
        "{output}"
    );

    // The right CA, but a name the certificate does not carry.
    let server = server_on(&tls.url("127.0.0.2", "verify-full", &tls.ca));
    let out = server.cli(&["migrate", "status"], None);
    let text = common::output(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("invalid peer certificate: certificate not valid for name \"127.0.0.2\""),
        "{text}"
    );

    // require: encrypted, no verification (what a managed database's default gives).
    let server = server_on(&tls.url_without_ca("127.0.0.2", "require"));
    let out = server.cli(&["migrate", "status"], None);
    assert!(out.status.success(), "{}", common::output(&out));
}
