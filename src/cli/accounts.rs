//! `mairust domain add|list|remove` and `mairust user add|list|remove` (SPEC M8).

use std::io::Read;

use anyhow::{Context, bail};
use clap::Subcommand;
use mairust_actors::accounts;
use mairust_actors::config::Config;

#[derive(Subcommand)]
pub enum DomainAction {
    /// Add a local domain.
    Add { name: String },
    /// List local domains.
    List,
    /// Remove a domain with all its users and their mail index.
    Remove { name: String },
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
    },
    /// List users, optionally of one domain.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Remove a user and their mailboxes.
    Remove { address: String },
}

pub async fn domain(config: &Config, action: DomainAction) -> anyhow::Result<()> {
    let db = super::open_current(config).await?;
    match action {
        DomainAction::Add { name } => {
            let d = accounts::add_domain(&db, &name).await?;
            println!("added domain {}", d.name);
        }
        DomainAction::List => {
            for d in accounts::list_domains(&db).await? {
                println!("{}", d.name);
            }
        }
        DomainAction::Remove { name } => {
            accounts::remove_domain(&db, &name).await?;
            println!("removed domain {}", name.to_ascii_lowercase());
        }
    }
    db.close().await?;
    Ok(())
}

pub async fn user(config: &Config, action: UserAction) -> anyhow::Result<()> {
    let db = super::open_current(config).await?;
    match action {
        UserAction::Add {
            address,
            password_stdin,
        } => {
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
            let u = accounts::add_user(&db, &address, &password).await?;
            println!(
                "added user {} (mailboxes: {})",
                u.address,
                accounts::DEFAULT_MAILBOXES.join(", ")
            );
        }
        UserAction::List { domain } => {
            for u in accounts::list_users(&db, domain.as_deref()).await? {
                let state = if u.disabled { " (disabled)" } else { "" };
                println!("{}{state}", u.address);
            }
        }
        UserAction::Remove { address } => {
            accounts::remove_user(&db, &address).await?;
            println!("removed user {}", address.to_lowercase());
        }
    }
    db.close().await?;
    Ok(())
}
