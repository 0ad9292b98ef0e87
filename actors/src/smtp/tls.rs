//! TLS for STARTTLS (RFC 3207) and implicit TLS (RFC 8314) with rustls. The
//! certificate comes from a [`CertStore`], so a renewed one is served without a restart.
//!
//! With `smtp.tls.self_signed: true` a missing certificate is created on first start
//! (rcgen), so the default configuration offers STARTTLS out of the box.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::certs::CertStore;
use crate::config::TlsConfig;

/// The acceptor every session uses, and the store behind it (reloaded by `serve`).
pub fn load_acceptor(
    config: &TlsConfig,
    hostname: &str,
) -> anyhow::Result<(TlsAcceptor, Arc<CertStore>)> {
    let store = CertStore::open("smtp.tls", config, hostname)?;
    Ok((TlsAcceptor::from(Arc::new(store.server_config())), store))
}
