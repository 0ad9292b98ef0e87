//! What the running server says about itself over HTTP: `mairust health check`,
//! `mairust status`, and whether a server answers at all (restore refuses then).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use mairust_actors::config::Config;
use serde_json::{Value, json};

use super::reachable;

/// GET `path` from the running server's HTTP address: (status, body).
async fn get(config: &Config, path: &str) -> anyhow::Result<(u16, Value)> {
    if !config.http.enabled {
        bail!("http.enabled is false: the server has no HTTP endpoint to ask");
    }
    let (client, url) = local_client(config, Duration::from_secs(5))?;
    let resp = client
        .get(format!("{url}{path}"))
        .send()
        .await
        .map_err(|e| {
            // The cause is deep in reqwest's chain (a refused connection, a certificate
            // that is not the pinned one): name all of it.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            anyhow::anyhow!("no server answers at {url} ({why}): is it running?")
        })?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// A client for this node's own HTTP listener and its base URL. With `http.tls` it
/// speaks HTTPS and accepts exactly the certificate that `http.tls.cert_path` starts
/// with (a pin: no CA, no name check, since the address is an IP and the file may hold
/// a leaf alone or a whole chain).
fn local_client(config: &Config, timeout: Duration) -> anyhow::Result<(reqwest::Client, String)> {
    let addr = reachable(&config.http.address, "http.address")?;
    let builder = reqwest::Client::builder().timeout(timeout);
    let Some(tls) = &config.http.tls else {
        return Ok((builder.build()?, format!("http://{addr}")));
    };
    use rustls_pki_types::pem::PemObject;
    let pinned = rustls_pki_types::CertificateDer::pem_file_iter(&tls.cert_path)
        .with_context(|| {
            format!(
                "http.tls.cert_path: cannot read {}",
                tls.cert_path.display()
            )
        })?
        .next()
        .with_context(|| {
            format!(
                "http.tls.cert_path: no certificate in {}",
                tls.cert_path.display()
            )
        })?
        .with_context(|| format!("http.tls.cert_path: bad PEM in {}", tls.cert_path.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Pinned { pinned, provider }))
        .with_no_client_auth();
    let client = builder.tls_backend_preconfigured(client_tls).build()?;
    Ok((client, format!("https://{addr}")))
}

/// Accepts the one certificate served from `http.tls.cert_path`; the handshake's
/// signatures are still checked against it.
#[derive(Debug)]
struct Pinned {
    pinned: rustls_pki_types::CertificateDer<'static>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the first one in http.tls.cert_path (another server, or a renewal it refused?)".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether a server answers at the configured HTTP address: `/health/live` over plain
/// HTTP; with `http.tls`, any connection accepted counts (a certificate problem must
/// never make `restore` think the server is down).
pub async fn server_answers(config: &Config) -> bool {
    if !config.http.enabled {
        return false;
    }
    if config.http.tls.is_some() {
        let Ok(addr) = reachable(&config.http.address, "http.address") else {
            return false;
        };
        return tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|c| c.is_ok());
    }
    let Ok((client, url)) = local_client(config, Duration::from_secs(1)) else {
        return false;
    };
    client
        .get(format!("{url}/health/live"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[derive(Subcommand)]
pub enum HealthAction {
    /// Exit 0 when the running server is ready (database and object store answer), 1
    /// when not or when no server answers: for scripts and after upgrades.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when the running server's process answers (`/health/live`, no dependency
    /// checked), 1 otherwise: for container HEALTHCHECKs and liveness probes.
    Live,
}

pub async fn health(config: &Config, action: HealthAction) -> anyhow::Result<bool> {
    let json = match action {
        HealthAction::Check { json } => json,
        HealthAction::Live => {
            let (status, _) = get(config, "/health/live").await?;
            println!("{}", if status == 200 { "live" } else { "not live" });
            return Ok(status == 200);
        }
    };
    let (status, body) = get(config, "/health/ready").await?;
    if json {
        println!("{body}");
    } else {
        println!("{}", body["status"].as_str().unwrap_or("unknown"));
        if let Some(checks) = body["checks"].as_object() {
            for (name, check) in checks {
                println!("  {name}: {}", check["status"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(status == 200)
}

#[derive(Args)]
pub struct StatusArgs {
    #[arg(long)]
    json: bool,
}

/// An uptime or an age for people, in its two largest units.
fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `mairust status`: what the running server says about itself.
pub async fn status(config: &Config, args: StatusArgs) -> anyhow::Result<bool> {
    let (code, body) = match get(config, "/health").await {
        Ok(r) => r,
        Err(e) => {
            if args.json {
                println!("{}", json!({"running": false, "error": format!("{e:#}")}));
            } else {
                println!("MaiRust is not running: {e:#}");
            }
            return Ok(false);
        }
    };
    if args.json {
        println!("{}", json!({"running": true, "health": body}));
        return Ok(code == 200 && body["status"] == "healthy");
    }
    let checks = &body["checks"];
    println!(
        "MaiRust {} on node {}: {}",
        body["version"].as_str().unwrap_or("?"),
        body["node"].as_str().unwrap_or("?"),
        body["status"].as_str().unwrap_or("?")
    );
    println!(
        "  uptime      {}",
        duration(body["uptime_seconds"].as_u64().unwrap_or(0))
    );
    if let Some(listeners) = body["listeners"].as_object() {
        let mut list: Vec<String> = listeners
            .iter()
            .map(|(name, addr)| format!("{name} {}", addr.as_str().unwrap_or("?")))
            .collect();
        if let Ok(http) = reachable(&config.http.address, "http.address") {
            list.push(format!("http {http}"));
        }
        println!("  listeners   {}", list.join(", "));
    }
    for dep in ["database", "storage"] {
        println!(
            "  {dep:<11} {} ({} ms)",
            checks[dep]["status"].as_str().unwrap_or("?"),
            checks[dep]["latency_ms"]
        );
    }
    let queue = &checks["queue"];
    println!(
        "  queue       {} entries, oldest {}, {} workers",
        queue["length"],
        queue["oldest_age_seconds"]
            .as_u64()
            .map(duration)
            .unwrap_or_else(|| "-".into()),
        queue["workers"]
    );
    println!(
        "  smtp        {} ({} open sessions)",
        checks["smtp"]["status"].as_str().unwrap_or("?"),
        checks["smtp"]["sessions"]
    );
    // Children of the actor tree that spent their restart budget (supervisor).
    if let Some(failed) = checks["actors"]["failed"]
        .as_array()
        .filter(|f| !f.is_empty())
    {
        let names: Vec<&str> = failed.iter().filter_map(|n| n.as_str()).collect();
        println!(
            "  actors      down after too many restarts: {}",
            names.join(", ")
        );
    }
    let storage = &checks["storage"];
    if let Some(bytes) = storage["bytes"].as_u64() {
        let limit = storage["limit_bytes"].as_u64().unwrap_or(0);
        if limit > 0 {
            println!(
                "  stored      {bytes} bytes of {limit} ({:.1}%)",
                bytes as f64 * 100.0 / limit as f64
            );
        } else {
            println!("  stored      {bytes} bytes (no limit)");
        }
    }
    Ok(body["status"] == "healthy")
}
