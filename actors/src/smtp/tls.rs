//! TLS for STARTTLS (RFC 3207) and implicit TLS (RFC 8314) with rustls.
//!
//! With `smtp.tls.self_signed: true` a missing certificate is created on first start
//! (rcgen), so the default configuration offers STARTTLS out of the box.

use std::sync::Arc;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

pub fn load_acceptor(config: &TlsConfig, hostname: &str) -> anyhow::Result<TlsAcceptor> {
    if config.self_signed && !config.cert_path.exists() && !config.key_path.exists() {
        write_self_signed(config, hostname)?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_path)
        .with_context(|| {
            format!(
                "smtp.tls.cert_path: cannot read {}",
                config.cert_path.display()
            )
        })?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "smtp.tls.cert_path: bad PEM in {}",
                config.cert_path.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "smtp.tls.cert_path: no certificate in {}",
            config.cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_path).with_context(|| {
        format!(
            "smtp.tls.key_path: cannot read a private key from {}",
            config.key_path.display()
        )
    })?;
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("smtp.tls: certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn write_self_signed(config: &TlsConfig, hostname: &str) -> anyhow::Result<()> {
    let mut names = vec![hostname.to_string()];
    if hostname != "localhost" {
        names.push("localhost".into());
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    for path in [&config.cert_path, &config.key_path] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    std::fs::write(&config.cert_path, certified.cert.pem())
        .with_context(|| format!("writing {}", config.cert_path.display()))?;
    write_private(
        &config.key_path,
        certified.signing_key.serialize_pem().as_bytes(),
    )?;
    tracing::warn!(component = "smtp", event = "self_signed_certificate", path = %config.cert_path.display(), "created a self-signed TLS certificate; replace it for production");
    Ok(())
}

fn write_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
