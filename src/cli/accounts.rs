//! `mairust domain add|list|remove` and `mairust user add|list|remove` (SPEC M8).

use std::io::Read;

use anyhow::{Context, bail};
use clap::Subcommand;
use mairust_actors::accounts;
use mairust_actors::audit::{AuditLog, Entry};
use mairust_actors::config::Config;

#[derive(Subcommand)]
pub enum DomainAction {
    /// Add a local domain.
    Add { name: String },
    /// List local domains.
    List,
    /// Remove a domain with all its users, their mail index and its DKIM keys.
    Remove { name: String },
    /// Print the DNS records the domain needs (MX, SPF, DKIM, DMARC) as zone file lines.
    Dns { name: String },
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Add a user; the password is read from standard input.
    Add {
        address: String,
        /// Read the password from standard input (first line). Required: passwords are
        /// never taken from the command line, where other users could see them.
        #[arg(long)]
        password_stdin: bool,
        /// Give the user the admin role: signed in to the Admin UI, they manage the
        /// server (every domain, user, key, hook and the queue).
        #[arg(long)]
        admin: bool,
    },
    /// List users, optionally of one domain.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Remove a user and their mailboxes.
    Remove { address: String },
    /// Set a user's password, read from standard input.
    Passwd {
        address: String,
        /// Read the new password from standard input (first line). Required.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: no login, and mail to them is refused (550 5.1.1).
    Disable { address: String },
    /// Enable a disabled user.
    Enable { address: String },
    /// Give a user the admin role (the Admin UI manages the server as them).
    GrantAdmin { address: String },
    /// Take the admin role back; their sessions reach only their own mail from the next
    /// request on.
    RevokeAdmin { address: String },
}

/// The first line of standard input, which must not be empty.
fn password_from_stdin(password_stdin: bool) -> anyhow::Result<String> {
    if !password_stdin {
        bail!("give the password on standard input with --password-stdin");
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password from standard input")?;
    let password = input.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        bail!("empty password on standard input");
    }
    Ok(password)
}

pub async fn domain(config: &Config, action: DomainAction) -> anyhow::Result<()> {
    let db = super::open_current(config).await?;
    let audit = super::audit_log(config, &db);
    match action {
        DomainAction::Add { name } => {
            let d = accounts::add_domain(&db, &name).await?;
            super::audit(&audit, "domain.create", &d.name).await;
            println!("added domain {}", d.name);
        }
        DomainAction::List => {
            for d in accounts::list_domains(&db).await? {
                println!("{}", d.name);
            }
        }
        DomainAction::Remove { name } => {
            accounts::remove_domain(&db, &name).await?;
            super::audit(&audit, "domain.delete", name.to_ascii_lowercase()).await;
            println!("removed domain {}", name.to_ascii_lowercase());
        }
        DomainAction::Dns { name } => super::dkim::print_domain_records(config, &db, &name).await?,
    }
    db.close().await?;
    Ok(())
}

pub async fn user(config: &Config, action: UserAction) -> anyhow::Result<()> {
    let db = super::open_current(config).await?;
    let audit = super::audit_log(config, &db);
    match action {
        UserAction::Add {
            address,
            password_stdin,
            admin,
        } => {
            let password = password_from_stdin(password_stdin)?;
            let hash = accounts::hash_password(&password)?;
            let u = accounts::add_user_hashed(&db, &address, hash, admin).await?;
            audit
                .record(
                    Entry::success("user.create", super::cli_actor())
                        .target(&u.address)
                        .detail("admin", u.admin),
                )
                .await;
            println!(
                "added user {}{} (mailboxes: {})",
                u.address,
                if u.admin { " with the admin role" } else { "" },
                accounts::DEFAULT_MAILBOXES.join(", ")
            );
        }
        UserAction::List { domain } => {
            for u in accounts::list_users(&db, domain.as_deref()).await? {
                let admin = if u.admin { " (admin)" } else { "" };
                let state = if u.disabled { " (disabled)" } else { "" };
                println!("{}{admin}{state}", u.address);
            }
        }
        UserAction::Remove { address } => {
            accounts::remove_user(&db, &address).await?;
            super::audit(&audit, "user.delete", address.to_lowercase()).await;
            println!("removed user {}", address.to_lowercase());
        }
        UserAction::Passwd {
            address,
            password_stdin,
        } => {
            let password = password_from_stdin(password_stdin)?;
            if password.is_empty() {
                anyhow::bail!("the password must not be empty");
            }
            let change = accounts::UserChange {
                password_hash: Some(accounts::hash_password(&password)?),
                ..Default::default()
            };
            let u = change_user(&db, &audit, &address, change).await?;
            println!("password of {} changed", u.address);
        }
        UserAction::Disable { address } => set_disabled(&db, &audit, &address, true).await?,
        UserAction::Enable { address } => set_disabled(&db, &audit, &address, false).await?,
        UserAction::GrantAdmin { address } => set_admin(&db, &audit, &address, true).await?,
        UserAction::RevokeAdmin { address } => set_admin(&db, &audit, &address, false).await?,
    }
    db.close().await?;
    Ok(())
}

async fn set_disabled(
    db: &sea_orm::DatabaseConnection,
    audit: &AuditLog,
    address: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let change = accounts::UserChange {
        disabled: Some(disabled),
        ..Default::default()
    };
    let u = change_user(db, audit, address, change).await?;
    let state = if disabled { "disabled" } else { "enabled" };
    println!("user {} {state}", u.address);
    Ok(())
}

async fn set_admin(
    db: &sea_orm::DatabaseConnection,
    audit: &AuditLog,
    address: &str,
    admin: bool,
) -> anyhow::Result<()> {
    let change = accounts::UserChange {
        admin: Some(admin),
        ..Default::default()
    };
    let u = change_user(db, audit, address, change).await?;
    if admin {
        println!("user {} has the admin role", u.address);
    } else {
        println!("user {} no longer has the admin role", u.address);
    }
    Ok(())
}

/// Applies `change` to the user, and records `user.change` with what changed.
async fn change_user(
    db: &sea_orm::DatabaseConnection,
    audit: &AuditLog,
    address: &str,
    change: accounts::UserChange,
) -> anyhow::Result<mairust_entities::user::Model> {
    let password_changed = change.password_hash.is_some();
    let disabled = change.disabled;
    let admin = change.admin;
    let u = accounts::update_user(db, address, change).await?;
    let mut entry = Entry::success("user.change", super::cli_actor()).target(&u.address);
    if password_changed {
        entry = entry.detail("password_changed", true);
    }
    if let Some(disabled) = disabled {
        entry = entry.detail("disabled", disabled);
    }
    if let Some(admin) = admin {
        entry = entry.detail("admin", admin);
    }
    audit.record(entry).await;
    Ok(u)
}
