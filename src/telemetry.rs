//! Logging (SPEC O4): level and format from `logging`, JSON lines with flattened fields
//! (`component`, `session_id`, `event` ...) or human text, on standard output.

use std::io::IsTerminal;

use mairust_actors::config::{LogFormat, LoggingConfig};
use tracing_subscriber::EnvFilter;

pub fn init(config: &LoggingConfig) {
    // RUST_LOG, when set, overrides the configured level (for debugging).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},sqlx=warn,sea_orm=warn", config.level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// CLI commands log only warnings, to standard error, so their output stays clean.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn,sqlx=error"))
        .with_writer(std::io::stderr)
        .try_init();
}
