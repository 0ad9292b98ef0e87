//! TLS certificates replaced while the server runs (issue 17): SMTP (STARTTLS) and the
//! HTTPS listener serve a renewed certificate after SIGHUP, or by themselves once the
//! files change; a broken replacement is refused and the running certificate stays.
//!
//! The certificates are made with the `openssl` command and what the server serves is
//! read with `openssl s_client` (SMTP) and reqwest trusting only one certificate
//! (HTTPS): clients we did not write.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Options, TestServer, eventually};

/// The first certificate of a PEM text, without its armour or line breaks.
fn first_cert(pem: &str) -> String {
    let begin = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let rest = &pem[begin + "-----BEGIN CERTIFICATE-----".len()..];
    let end = rest.find("-----END CERTIFICATE-----").unwrap();
    rest[..end].split_whitespace().collect()
}

fn file_cert(path: &Path) -> String {
    first_cert(&std::fs::read_to_string(path).unwrap())
}

/// The certificate the SMTP listener at `port` serves after STARTTLS, as
/// `openssl s_client` sees it.
fn smtp_cert(port: u16) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    first_cert(&String::from_utf8_lossy(&out.stdout))
}

/// Moves `from` over `to` in one step (how renewal tools put files in place).
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// GET `/health/live` over HTTPS trusting only `cert`: Ok(status) or the error text.
async fn https_live(http: std::net::SocketAddr, cert: &Path) -> Result<u16, String> {
    let pem = std::fs::read(cert).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(format!("https://localhost:{}/health/live", http.port()))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn sighup_serves_renewed_certificates_and_keeps_them_on_a_bad_one() {
    let certs = tempfile::tempdir().unwrap();
    let (h1, h1_key) = common::certs::self_signed(certs.path(), "h1.test");
    let (http_cert, http_key) = (certs.path().join("http.crt"), certs.path().join("http.key"));
    replace(&h1, &http_cert);
    replace(&h1_key, &http_key);
    let server = TestServer::start_with(Options {
        server_yaml: vec!["certificate_check_seconds: 0".into()],
        http_yaml: vec![
            "tls:".into(),
            format!("  cert_path: {}", http_cert.display()),
            format!("  key_path: {}", http_key.display()),
        ],
        ..Options::default()
    });
    let smtp_cert_path = server.dir.path().join("tls/cert.pem");
    let smtp_key_path = server.dir.path().join("tls/key.pem");
    let first = file_cert(&smtp_cert_path);
    assert_eq!(smtp_cert(server.inbound.port()), first);
    assert_eq!(https_live(server.http, &h1).await, Ok(200));
    // HTTPS only: a plain HTTP request gets no answer.
    assert!(
        reqwest::get(format!("http://{}/health/live", server.http))
            .await
            .is_err()
    );
    // The CLI reaches the HTTPS listener, trusting the configured certificate.
    // The configuration as the CLI needs it: the port the server chose.
    let cli_config = certs.path().join("cli.yaml");
    let yaml = std::fs::read_to_string(&server.config_path)
        .unwrap()
        .replace(
            "http:\n  address: 127.0.0.1:0",
            &format!("http:\n  address: {}", server.http),
        );
    std::fs::write(&cli_config, yaml).unwrap();
    let health_live = || {
        Command::new(common::BIN)
            .arg("--config")
            .arg(&cli_config)
            .args(["health", "live"])
            .output()
            .unwrap()
    };
    let out = health_live();
    assert!(out.status.success(), "{}", common::output(&out));

    // Renewed: new files for both listeners, then `mairust reload` (SIGHUP).
    let (b, b_key) = common::certs::self_signed(certs.path(), "b.test");
    let (h2, h2_key) = common::certs::self_signed(certs.path(), "h2.test");
    replace(&b_key, &smtp_key_path);
    replace(&b, &smtp_cert_path);
    replace(&h2_key, &http_key);
    replace(&h2, &http_cert);
    // Nothing changes before the signal (no file watching configured).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp_cert(server.inbound.port()), first);
    let out = server.cli(&["reload"], None);
    assert!(out.status.success(), "{}", common::output(&out));
    let text = common::output(&out);
    assert!(
        text.contains("smtp.tls") && text.contains("http.tls"),
        "{text}"
    );
    assert_eq!(smtp_cert(server.inbound.port()), file_cert(&b));
    assert_eq!(https_live(server.http, &h2).await, Ok(200));
    assert!(
        https_live(server.http, &h1).await.is_err(),
        "old certificate still served"
    );
    // The CLI pins what the file holds now: the renewed certificate.
    let out = health_live();
    assert!(out.status.success(), "{}", common::output(&out));
    // A file the server does not serve (a renewal it would refuse): the CLI says so.
    let (h3, _) = common::certs::self_signed(certs.path(), "h3.test");
    replace(&h3, &http_cert);
    let out = health_live();
    assert!(!out.status.success());
    assert!(
        common::output(&out).contains("not the first one in http.tls.cert_path"),
        "{}",
        common::output(&out)
    );
    replace(&h2, &http_cert);

    // A broken renewal (a certificate without its key): refused, the running one stays,
    // and `mairust reload` says so with a failing exit code.
    let (c, _) = common::certs::self_signed(certs.path(), "c.test");
    replace(&c, &smtp_cert_path);
    let out = server.cli(&["reload"], None);
    assert!(!out.status.success(), "{}", common::output(&out));
    assert!(
        common::output(&out).contains("a TLS certificate was not reloaded"),
        "{}",
        common::output(&out)
    );
    assert_eq!(smtp_cert(server.inbound.port()), file_cert(&b));
    assert!(server.log_contains("tls_reload_failed"));
    // Mail still flows over STARTTLS.
    let mut client = common::tls_login(
        server.submission.port(),
        false,
        "bob@example.test",
        common::PASSWORD,
    )
    .await
    .expect("STARTTLS and AUTH with the running certificate");
    client.noop().await.unwrap();
}

#[tokio::test]
async fn renewed_files_are_served_without_a_signal() {
    let server = TestServer::start_with(Options {
        server_yaml: vec!["certificate_check_seconds: 1".into()],
        ..Options::default()
    });
    let smtp_cert_path = server.dir.path().join("tls/cert.pem");
    let smtp_key_path = server.dir.path().join("tls/key.pem");
    let certs = tempfile::tempdir().unwrap();
    let (b, b_key) = common::certs::self_signed(certs.path(), "b.test");
    // The key first: for a moment the pair does not match, which is refused; the
    // certificate then completes it.
    replace(&b_key, &smtp_key_path);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    replace(&b, &smtp_cert_path);
    let port = server.inbound.port();
    let want = file_cert(&b);
    assert!(
        eventually(Duration::from_secs(10), || {
            let want = want.clone();
            async move { smtp_cert(port) == want }
        })
        .await,
        "renewed certificate not served"
    );
    assert!(server.log_contains("tls_certificate_reloaded"));
    // Garbage in place of the certificate: refused, the renewed one stays.
    let failures = || {
        server
            .log_lines()
            .iter()
            .filter(|l| l["event"] == "tls_reload_failed")
            .count()
    };
    let before = failures();
    std::fs::write(smtp_cert_path.with_extension("new"), b"not a certificate").unwrap();
    std::fs::rename(smtp_cert_path.with_extension("new"), &smtp_cert_path).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async { failures() > before }).await,
        "garbage not refused"
    );
    assert_eq!(smtp_cert(port), want);
}
