//! TLS certificates that change while the server runs: a [`CertStore`] holds one
//! listener's certificate chain and key (`smtp.tls`, `http.tls`) and hands them to rustls
//! for each handshake, so a renewed certificate (certbot, lego, cert-manager) is served
//! without a restart. `serve` reloads every store on SIGHUP and when its files change
//! on disk; a replacement that does not load (half-written, key not matching) is refused
//! with an error and the running certificate stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::Context as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// What identifies the files' contents without reading them: inode, size and mtime of
/// both. A renewal that renames new files into place or rewrites them changes it.
type Stamp = [(u64, u64, Option<SystemTime>); 2];

pub struct CertStore {
    /// The configuration key, for messages (`smtp.tls`, `http.tls`).
    pub name: &'static str,
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("name", &self.name)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold the certificate already served.
    Unchanged,
    /// A different certificate is served from now on.
    Replaced,
}

impl CertStore {
    /// Loads the certificate and key (created self-signed first when `self_signed` is
    /// set and neither file exists). An error names the key and the file.
    pub fn open(
        name: &'static str,
        config: &TlsConfig,
        hostname: &str,
    ) -> anyhow::Result<Arc<CertStore>> {
        if config.self_signed && !config.cert_path.exists() && !config.key_path.exists() {
            write_self_signed(name, config, hostname)?;
        }
        let stamp = stamp(&config.cert_path, &config.key_path);
        let key = load(name, &config.cert_path, &config.key_path)?;
        Ok(Arc::new(CertStore {
            name,
            cert_path: config.cert_path.clone(),
            key_path: config.key_path.clone(),
            current: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// A rustls server configuration whose certificate is always this store's current
    /// one.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone())
    }

    /// Reads the files again and serves what they hold. On error the running
    /// certificate stays.
    pub fn reload(&self) -> anyhow::Result<Reloaded> {
        let stamp = stamp(&self.cert_path, &self.key_path);
        let key = load(self.name, &self.cert_path, &self.key_path)?;
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.cert == key.cert {
            return Ok(Reloaded::Unchanged);
        }
        *current = Arc::new(key);
        Ok(Reloaded::Replaced)
    }

    /// [`CertStore::reload`] when the files changed since the last load (by inode,
    /// size, mtime); None when they did not. A failed load is not retried until the
    /// files change again.
    pub fn reload_if_changed(&self) -> Option<anyhow::Result<Reloaded>> {
        let now = stamp(&self.cert_path, &self.key_path);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *last == now {
                return None;
            }
            *last = now;
        }
        Some(self.reload())
    }

    /// [`CertStore::reload`] with its outcome logged: `tls_certificate_reloaded` or
    /// `tls_reload_failed`. Returns whether another certificate is served now, or the
    /// error text.
    pub fn reload_logged(&self, reason: &str) -> Result<bool, String> {
        log_outcome(self, reason, self.reload())
    }

    /// The certificate served now (its end-entity certificate first).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The log component of a store's listener: `smtp` or `api`.
fn component(name: &str) -> &'static str {
    if name.starts_with("http") {
        "api"
    } else {
        "smtp"
    }
}

/// Logs what a reload of `store` did.
pub fn log_outcome(
    store: &CertStore,
    reason: &str,
    outcome: anyhow::Result<Reloaded>,
) -> Result<bool, String> {
    match outcome {
        Ok(Reloaded::Replaced) => {
            tracing::info!(component = component(store.name), event = "tls_certificate_reloaded", config = store.name, path = %store.cert_path.display(), reason, "new TLS certificate served");
            Ok(true)
        }
        Ok(Reloaded::Unchanged) => Ok(false),
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(component = component(store.name), event = "tls_reload_failed", config = store.name, path = %store.cert_path.display(), reason, error = %error, "TLS certificate not reloaded; the running one stays");
            Err(error)
        }
    }
}

/// Checks every store's files every `interval` and reloads those that changed, until
/// the process ends.
pub fn watch(stores: Vec<Arc<CertStore>>, interval: std::time::Duration) {
    if stores.is_empty() || interval.is_zero() {
        return;
    }
    actix::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for store in &stores {
                if let Some(outcome) = store.reload_if_changed() {
                    let _ = log_outcome(store, "files changed", outcome);
                }
            }
        }
    });
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamp(cert: &Path, key: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.len(), m.modified().ok()))
    };
    Some([one(cert)?, one(key)?])
}

fn load(name: &str, cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("{name}.cert_path: cannot read {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{name}.cert_path: bad PEM in {}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "{name}.cert_path: no certificate in {}",
            cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_path).with_context(|| {
        format!(
            "{name}.key_path: cannot read a private key from {}",
            key_path.display()
        )
    })?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    CertifiedKey::from_der(certs, key, &provider).with_context(|| {
        format!("{name}: the certificate and the key do not match or cannot be used")
    })
}

fn write_self_signed(name: &str, config: &TlsConfig, hostname: &str) -> anyhow::Result<()> {
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
    tracing::warn!(component = component(name), event = "self_signed_certificate", config = name, path = %config.cert_path.display(), "created a self-signed TLS certificate; replace it for production");
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn replaced_files_are_served_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = write_pair(dir.path(), "a.test");
        let (cert_b, key_b) = write_pair(dir.path(), "b.test");
        let live_cert = dir.path().join("live.crt");
        let live_key = dir.path().join("live.key");
        std::fs::copy(&cert_a, &live_cert).unwrap();
        std::fs::copy(&key_a, &live_key).unwrap();
        let config = TlsConfig {
            cert_path: live_cert.clone(),
            key_path: live_key.clone(),
            self_signed: false,
        };
        let store = CertStore::open("smtp.tls", &config, "x").unwrap();
        let first = store.current().cert.clone();
        assert!(store.reload_if_changed().is_none(), "nothing changed yet");
        assert_eq!(store.reload().unwrap(), Reloaded::Unchanged);

        // Only the certificate replaced: it does not match the key; the old one stays.
        let tmp = dir.path().join("tmp.crt");
        std::fs::copy(&cert_b, &tmp).unwrap();
        std::fs::rename(&tmp, &live_cert).unwrap();
        let err = store.reload_if_changed().unwrap().unwrap_err();
        assert!(format!("{err:#}").contains("do not match"), "{err:#}");
        assert_eq!(store.current().cert, first);
        assert!(
            store.reload_if_changed().is_none(),
            "a failure is not retried unchanged"
        );

        // Then the key: now the pair loads.
        let tmp = dir.path().join("tmp.key");
        std::fs::copy(&key_b, &tmp).unwrap();
        std::fs::rename(&tmp, &live_key).unwrap();
        assert_eq!(
            store.reload_if_changed().unwrap().unwrap(),
            Reloaded::Replaced
        );
        assert_ne!(store.current().cert, first);

        // A missing file: refused, still served.
        std::fs::remove_file(&live_key).unwrap();
        assert!(store.reload().is_err());
        assert_ne!(store.current().cert, first);
    }
}
