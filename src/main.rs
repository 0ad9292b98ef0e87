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
enum DbAction {
    /// Compare the database with the object store and with itself (exit 1 while
    /// problems remain).
    Check(cli::dbcheck::CheckArgs),
    /// Tie the configured object store to this database when `serve` refuses it as
    /// missing, empty or another database's (nothing is deleted).
    AdoptStore(cli::store::AdoptArgs),
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SMTP listeners, queue workers, HTTP health endpoints).
    Serve,
    /// Apply pending database migrations, or show their status.
    Migrate {
        /// Say what the pending migrations mean for nodes still running the previous
        /// release (additive: they keep serving; breaking: stop them first) and change
        /// nothing. Exit 0 when a rolling upgrade is possible, 1 when not.
        #[arg(long)]
        check: bool,
        #[command(subcommand)]
        action: Option<cli::migrate::MigrateAction>,
    },
    /// Manage local domains.
    Domain {
        #[command(subcommand)]
        action: cli::accounts::DomainAction,
    },
    /// DKIM signing keys of local domains (the mail users submit is signed with them).
    Dkim {
        #[command(subcommand)]
        action: cli::dkim::DkimAction,
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `mairust completions bash > /etc/bash_completion.d/mairust`.
    Completions { shell: clap_complete::Shell },
    /// Write the manual pages (mairust.1 and one per subcommand) into a directory, e.g.
    /// `mairust man /usr/local/share/man/man1`.
    Man { dir: PathBuf },
    /// Make the running server re-read its configuration (log level, hooks, rate
    /// limits) and report the result.
    Reload,
    /// Write a backup archive: database snapshot, configuration, message bodies.
    Backup(cli::backup::BackupArgs),
    /// Restore a backup archive into the configured database and object store.
    Restore(cli::backup::RestoreArgs),
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Ask the running server whether it is ready (exit 0) or not (exit 1).
    Health {
        #[command(subcommand)]
        action: cli::diag::HealthAction,
    },
    /// What the running server says about itself: version, uptime, listeners,
    /// dependencies, queue, storage.
    Status(cli::diag::StatusArgs),
    /// Probe one dependency for real: db, storage or smtp.
    Check(cli::diag::CheckArgs),
    /// Show the JSON log file, filtered (`logging.file`).
    Logs(cli::diag::LogsArgs),
}

/// Everything this process creates is its owner's alone, whatever umask it was started
/// with: the SQLite database and its -wal/-shm (password and API key hashes, hook
/// secrets), message bodies and their directories, logs, the audit file, spool files,
/// backups, restored files, the pid file, and the output of `pg_dump`/`pg_restore` it
/// runs. Files with a mode of their own (0600, directories 0700) set it explicitly too;
/// the umask covers what libraries create (SQLite, object_store, file rotation).
fn private_files() {
    // SAFETY: umask only changes this process's file creation mask; called first in
    // main, before any thread exists.
    unsafe {
        libc::umask(0o077);
    }
}

fn main() -> ExitCode {
    private_files();
    let cli = Cli::parse();
    // No configuration needed: generated from the command-line definition itself.
    match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "mairust",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            return match write_man_pages(&Cli::command(), dir) {
                Ok(n) => {
                    println!("wrote {n} manual pages to {}", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "mairust: cannot write the manual pages to {}: {e}",
                        dir.display()
                    );
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
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
            for (old, new) in config.smtp.deprecated_keys() {
                println!("note: {old} is deprecated; rename it to {new}");
            }
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
            let verdict = runtime.block_on(async move {
                let done = |r: anyhow::Result<()>| r.map(|()| true);
                match command {
                    Command::Migrate { check: true, .. } => {
                        done(cli::migrate::check(&config).await)
                    }
                    Command::Migrate { action, .. } => {
                        done(cli::migrate::run(&config, action).await)
                    }
                    Command::Domain { action } => {
                        done(cli::accounts::domain(&config, action).await)
                    }
                    Command::User { action } => done(cli::accounts::user(&config, action).await),
                    Command::Dkim { action } => done(cli::dkim::run(&config, action).await),
                    Command::Queue { action } => done(cli::queue::run(&config, action).await),
                    Command::Admin { action } => done(cli::admin::run(&config, action).await),
                    Command::Reload => done(cli::reload::run(&config).await),
                    Command::Backup(args) => done(cli::backup::backup(&config, &path, args).await),
                    Command::Restore(args) => done(cli::backup::restore(&config, args).await),
                    Command::Db {
                        action: DbAction::Check(args),
                    } => cli::dbcheck::run(&config, args).await,
                    Command::Db {
                        action: DbAction::AdoptStore(args),
                    } => done(cli::store::adopt(&config, args).await),
                    Command::Health { action } => cli::diag::health(&config, action).await,
                    Command::Status(args) => cli::diag::status(&config, args).await,
                    Command::Check(args) => cli::diag::check(&config, args).await,
                    Command::Logs(args) => cli::diag::logs(&config, args).await,
                    Command::Serve
                    | Command::ConfigCheck
                    | Command::Completions { .. }
                    | Command::Man { .. } => unreachable!("handled above"),
                }
            });
            match verdict {
                // The command printed why: no error line, but a failing exit code.
                Ok(false) => return ExitCode::FAILURE,
                Ok(true) => Ok(()),
                Err(e) => Err(e),
            }
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

/// `mairust.1` for the whole command and `mairust-SUB.1` (`mairust-SUB-SUBSUB.1`) for
/// each subcommand, into `dir` (which must exist). Returns how many were written.
fn write_man_pages(command: &clap::Command, dir: &std::path::Path) -> std::io::Result<usize> {
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a directory",
        ));
    }
    let mut written = 0;
    let mut stack = vec![(command.clone().name("mairust"), "mairust".to_string())];
    while let Some((cmd, name)) = stack.pop() {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let full = format!("{name}-{}", sub.get_name());
            stack.push((sub.clone().name(full.clone()), full));
        }
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
        written += 1;
    }
    Ok(written)
}
