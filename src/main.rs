//! `mairust`: the mail server and its operator's CLI in one binary.
//!
//! Layout:
//! - `config`: finding and loading config.yaml (search path, `env:` values)
//! - `telemetry`: logs (text/JSON, file rotation, level reload) and OTLP traces
//! - `api/`: the actix-web HTTP server (health endpoints, REST API, OpenAPI)
//! - `cli/`: one module per subcommand group (serve, migrate, domain, user, queue, admin)

mod api;
mod cli;
mod config;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mairust", version, about = "MaiRust mail server")]
struct Cli {
    /// Configuration file (else $MAIRUST_CONFIG, ./config.yaml, ~/.config/mairust/config.yaml,
    /// /etc/mairust/config.yaml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SMTP listeners, queue workers, HTTP health endpoints).
    Serve,
    /// Apply pending database migrations, or show their status.
    Migrate {
        #[command(subcommand)]
        action: Option<cli::migrate::MigrateAction>,
    },
    /// Manage local domains.
    Domain {
        #[command(subcommand)]
        action: cli::accounts::DomainAction,
    },
    /// Manage users (mailboxes INBOX and Sent are created with each user).
    User {
        #[command(subcommand)]
        action: cli::accounts::UserAction,
    },
    /// API keys for the REST API (the first admin key comes from here).
    Admin {
        #[command(subcommand)]
        action: cli::admin::AdminAction,
    },
    /// Inspect and edit the outbound queue (works with or without a running server).
    Queue {
        #[command(subcommand)]
        action: cli::queue::QueueAction,
    },
    /// Check the configuration file and print where it was found.
    ConfigCheck,
    /// Make the running server re-read its configuration (log level, hooks, rate
    /// limits) and report the result.
    Reload,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, path) = match config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mairust: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => match telemetry::init(&config) {
            Ok(telemetry) => cli::serve::run(config, &path, telemetry),
            Err(e) => Err(e),
        },
        Command::ConfigCheck => {
            println!("configuration OK: {}", path.display());
            Ok(())
        }
        command => {
            telemetry::init_cli();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("mairust: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async move {
                match command {
                    Command::Migrate { action } => cli::migrate::run(&config, action).await,
                    Command::Domain { action } => cli::accounts::domain(&config, action).await,
                    Command::User { action } => cli::accounts::user(&config, action).await,
                    Command::Queue { action } => cli::queue::run(&config, action).await,
                    Command::Admin { action } => cli::admin::run(&config, action).await,
                    Command::Reload => cli::reload::run(&config).await,
                    Command::Serve | Command::ConfigCheck => unreachable!("handled above"),
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mairust: {e:#}");
            ExitCode::FAILURE
        }
    }
}
