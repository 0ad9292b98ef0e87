//! `mairust admin create-key|list-keys|revoke-key`: API keys from the command line, for
//! the first admin key and for recovery (SPEC A2); `--domain` limits a key to domains.

use std::collections::BTreeSet;

use anyhow::Context;
use clap::Subcommand;
use mairust_actors::apikeys::{self, Scope};
use mairust_actors::audit::{AuditLog, Entry};
use mairust_actors::config::Config;
use mairust_entities::api_key;

#[derive(Subcommand)]
pub enum AdminAction {
    /// Create an API key and print it (it is shown only once).
    CreateKey {
        /// read, write, send or admin; repeat for several.
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// What the key is for.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Limit the key to this domain (it must exist); repeat for several. Without
        /// it the key acts on every domain.
        #[arg(long = "domain")]
        domains: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List API keys (never their secrets).
    ListKeys {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by id.
    RevokeKey { id: i64 },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
}

/// `every domain` or `domains a.example, b.example`.
fn reach(key: &api_key::Model) -> String {
    match apikeys::parse_domains(key.domains.as_deref()) {
        None => "every domain".into(),
        Some(d) => format!("domains {}", apikeys::domains_text(&d)),
    }
}

pub async fn run(config: &Config, action: AdminAction) -> anyhow::Result<()> {
    let db = super::open_current(config).await?;
    let audit = super::audit_log(config, &db);
    let result = act(&db, &audit, action).await;
    db.close().await?;
    result
}

async fn act(
    db: &sea_orm::DatabaseConnection,
    audit: &AuditLog,
    action: AdminAction,
) -> anyhow::Result<()> {
    match action {
        AdminAction::CreateKey {
            scopes,
            name,
            domains,
            json,
        } => {
            let scopes: BTreeSet<Scope> = scopes.into_iter().collect();
            let domains = if domains.is_empty() {
                None
            } else {
                Some(apikeys::normalize_domains(&domains)?)
            };
            let created = apikeys::create(db, &name, &scopes, domains.as_ref())
                .await
                .context("creating the API key")?;
            audit
                .record(
                    Entry::success("api_key.create", super::cli_actor())
                        .target(created.record.id)
                        .detail("name", created.record.name.clone())
                        .detail("scopes", created.record.scopes.clone())
                        .detail("domains", created.record.domains.clone()),
                )
                .await;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": created.record.id, "key": created.key, "scopes": created.record.scopes, "domains": created.record.domains, "name": created.record.name})
                );
            } else {
                println!("{}", created.key);
                eprintln!(
                    "API key {} ({}) with scopes: {}, for {}. It is shown only now; store it safely.",
                    created.record.id,
                    created.record.prefix,
                    created.record.scopes,
                    reach(&created.record)
                );
            }
        }
        AdminAction::ListKeys { json } => {
            let keys = apikeys::list(db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for k in keys {
                    let state = match k.revoked_at {
                        Some(t) => format!("revoked {}", t.to_utc().format("%Y-%m-%d %H:%M")),
                        None => "active".into(),
                    };
                    println!(
                        "{}  {}  {}  [{}]  {}  {}",
                        k.id,
                        k.prefix,
                        k.name,
                        k.scopes,
                        reach(&k),
                        state
                    );
                }
            }
        }
        AdminAction::RevokeKey { id } => {
            let k = apikeys::revoke(db, id).await?;
            audit
                .record(
                    Entry::success("api_key.revoke", super::cli_actor())
                        .target(k.id)
                        .detail("name", k.name.clone()),
                )
                .await;
            println!("API key {} ({}) revoked", k.id, k.prefix);
        }
    }
    Ok(())
}
