//! `mairust dkim generate|list|rotate|remove` and `mairust domain dns`: DKIM keys of
//! local domains and the DNS records a domain publishes. Private keys are never
//! printed; they are sealed in the database under `dkim.master_key_file`.

use chrono::Utc;
use clap::{Subcommand, ValueEnum};
use mairust_actors::audit::Entry;
use mairust_actors::config::Config;
use mairust_actors::dkim::dns::{dkim_record, domain_records};
use mairust_actors::dkim::store::{self, KeyInfo, NewKey};
use mairust_actors::dkim::{Algorithm, MasterKey};

#[derive(Clone, Copy, ValueEnum)]
pub enum AlgorithmArg {
    Rsa,
    Ed25519,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(a: AlgorithmArg) -> Algorithm {
        match a {
            AlgorithmArg::Rsa => Algorithm::Rsa,
            AlgorithmArg::Ed25519 => Algorithm::Ed25519,
        }
    }
}

#[derive(Subcommand)]
pub enum DkimAction {
    /// Make a key for a domain; it signs at once. Prints the DNS record to publish.
    Generate {
        domain: String,
        /// Default: the algorithm and the UTC date and time to the minute,
        /// rsa-YYYYMMDDHHMM or ed-YYYYMMDDHHMM (e.g. rsa-202612031152).
        #[arg(long)]
        selector: Option<String>,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: AlgorithmArg,
    },
    /// List keys with their state (pending, active, retired, expired).
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Replace a domain's key of one algorithm: the new key signs after
    /// dkim.rotation_delay_hours (publish its record meanwhile); the old one signs
    /// until then and stays listed for dkim.rotation_grace_days more.
    Rotate {
        domain: String,
        /// The new key's; default: rsa-YYYYMMDDHHMM or ed-YYYYMMDDHHMM (UTC, to the
        /// minute).
        #[arg(long)]
        selector: Option<String>,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: AlgorithmArg,
        /// Hours until the new key signs (default: dkim.rotation_delay_hours).
        #[arg(long)]
        delay_hours: Option<u32>,
        /// Days the old record stays listed after that (default: dkim.rotation_grace_days).
        #[arg(long)]
        grace_days: Option<u32>,
    },
    /// Remove a key now: mail it signed stops verifying once its record is gone.
    Remove { domain: String, selector: String },
}

async fn master_key(
    config: &Config,
    db: &sea_orm::DatabaseConnection,
) -> anyhow::Result<MasterKey> {
    Ok(store::master_key(db, &config.dkim.master_key_file).await?)
}

pub async fn run(config: &Config, action: DkimAction) -> anyhow::Result<()> {
    let db = super::open_current(config).await?;
    let audit = super::audit_log(config, &db);
    match action {
        DkimAction::Generate {
            domain,
            selector,
            algorithm,
        } => {
            let master = master_key(config, &db).await?;
            let new = NewKey {
                domain: &domain,
                selector: selector.as_deref(),
                algorithm: algorithm.into(),
            };
            let info = store::add(&db, &master, new).await?;
            audit.record(entry("dkim.create", &info)).await;
            println!(
                "added DKIM key {} ({}) for {}; it signs mail from now on.",
                info.key.selector, info.key.algorithm, info.domain
            );
            println!("Publish this TXT record:");
            println!("{}", record_line(&info));
        }
        DkimAction::List { domain } => {
            let now = Utc::now();
            let keys = store::list(&db, domain.as_deref()).await?;
            if keys.is_empty() {
                println!("no DKIM keys");
            }
            for k in keys {
                let until = |t: Option<chrono::DateTime<chrono::FixedOffset>>| {
                    t.map_or("-".into(), |t| {
                        t.to_utc().format("%Y-%m-%d %H:%M").to_string()
                    })
                };
                println!(
                    "{} {} {} {} signs_from={} signs_until={} publish_until={}",
                    k.domain,
                    k.key.selector,
                    k.key.algorithm,
                    k.state(now).name(),
                    k.key.signs_from.to_utc().format("%Y-%m-%d %H:%M"),
                    until(k.key.signs_until),
                    until(k.key.publish_until),
                );
            }
        }
        DkimAction::Rotate {
            domain,
            selector,
            algorithm,
            delay_hours,
            grace_days,
        } => {
            let master = master_key(config, &db).await?;
            let delay = delay_hours.unwrap_or(config.dkim.rotation_delay_hours);
            let grace = grace_days.unwrap_or(config.dkim.rotation_grace_days);
            let new = NewKey {
                domain: &domain,
                selector: selector.as_deref(),
                algorithm: algorithm.into(),
            };
            let rotation = store::rotate(&db, &master, new, delay, grace).await?;
            let new = &rotation.new;
            let retired: Vec<String> = rotation
                .retired
                .iter()
                .map(|k| k.key.selector.clone())
                .collect();
            audit
                .record(entry("dkim.rotate", new).detail("retired", retired))
                .await;
            println!(
                "added DKIM key {} ({}) for {}; it signs from {}.",
                new.key.selector,
                new.key.algorithm,
                new.domain,
                new.key.signs_from.to_utc().to_rfc3339()
            );
            println!("Publish this TXT record now:");
            println!("{}", record_line(new));
            for old in &rotation.retired {
                println!(
                    "key {} signs until {}; keep its record published until {}.",
                    old.key.selector,
                    old.key
                        .signs_until
                        .map(|t| t.to_utc().to_rfc3339())
                        .unwrap_or_default(),
                    old.key
                        .publish_until
                        .map(|t| t.to_utc().to_rfc3339())
                        .unwrap_or_default()
                );
            }
        }
        DkimAction::Remove { domain, selector } => {
            let info = store::remove(&db, &domain, &selector).await?;
            audit.record(entry("dkim.delete", &info)).await;
            println!(
                "removed DKIM key {} of {}; its record {}._domainkey.{} can be withdrawn",
                info.key.selector, info.domain, info.key.selector, info.domain
            );
        }
    }
    db.close().await?;
    Ok(())
}

/// `mairust domain dns DOMAIN`: every record the domain needs, as zone file lines.
pub async fn print_domain_records(
    config: &Config,
    db: &sea_orm::DatabaseConnection,
    domain: &str,
) -> anyhow::Result<()> {
    let keys = store::list(db, Some(domain)).await?;
    let name = mairust_actors::accounts::normalize_domain(domain)?;
    let records = domain_records(&name, &config.server.hostname, &keys, Utc::now());
    for r in &records {
        println!("; {}: {}", r.purpose, r.note);
        println!("{}", r.zone_line());
    }
    if keys.is_empty() {
        println!("; no DKIM key yet: make one with `mairust dkim generate {name}`");
    }
    Ok(())
}

fn record_line(info: &KeyInfo) -> String {
    dkim_record(info, String::new()).zone_line()
}

fn entry(event: &'static str, info: &KeyInfo) -> Entry {
    Entry::success(event, super::cli_actor())
        .target(format!("{}/{}", info.domain, info.key.selector))
        .detail("algorithm", info.key.algorithm.as_str())
}
