//! `mairust check db|storage|smtp`: each probes the dependency for real, without the
//! server.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use mairust_actors::config::Config;
use mairust_actors::database::{self, SchemaStatus};
use mairust_actors::storage::BodyStore;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::reachable;
use crate::cli;

#[derive(Clone, Copy, ValueEnum)]
pub enum Target {
    /// Connect, run a query, compare the schema with this binary's migrations.
    Db,
    /// Put, read back and delete a probe object.
    Storage,
    /// Connect to an SMTP listener, read the greeting, EHLO, QUIT.
    Smtp,
}

#[derive(Args)]
pub struct CheckArgs {
    target: Target,
    /// For `smtp`: inbound, submission or submissions (implicit TLS is not spoken).
    #[arg(long, default_value = "inbound")]
    listener: String,
    #[arg(long)]
    json: bool,
}

/// `mairust check db|storage|smtp`: each probes for real, without the server.
pub async fn check(config: &Config, args: CheckArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let result = match args.target {
        Target::Db => check_db(config).await,
        Target::Storage => check_storage(config).await,
        Target::Smtp => check_smtp(config, &args.listener).await,
    };
    let ms = started.elapsed().as_millis() as u64;
    let name = match args.target {
        Target::Db => "database",
        Target::Storage => "storage",
        Target::Smtp => "smtp",
    };
    let ok = result.is_ok();
    if args.json {
        let (detail, error) = match &result {
            Ok(d) => (d.clone(), Value::Null),
            Err(e) => (String::new(), Value::String(format!("{e:#}"))),
        };
        println!(
            "{}",
            json!({"check": name, "ok": ok, "latency_ms": ms, "detail": detail, "error": error})
        );
    } else {
        match &result {
            Ok(detail) => println!("{name}: OK ({ms} ms) {detail}"),
            Err(e) => println!("{name}: FAILED ({ms} ms): {e:#}"),
        }
    }
    Ok(ok)
}

async fn check_db(config: &Config) -> anyhow::Result<String> {
    // Never create: a wrong path must not turn into a new, empty database.
    if let Some(path) = database::sqlite_path(&config.database.url)
        && !path.exists()
    {
        bail!("no database at {}", path.display());
    }
    let db = database::connect(&config.database)
        .await
        .with_context(|| format!("cannot connect to {}", cli::redact(&config.database.url)))?;
    database::ping(&db).await.context("query failed")?;
    let backend = if config.database.is_sqlite() {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    if !database::has_schema(&db).await? {
        db.close().await.ok();
        return Ok(format!(
            "{backend}, empty: no schema yet (the first `serve` creates it; is database.url right?)"
        ));
    }
    let status = database::schema_status(&db).await?;
    db.close().await.ok();
    match status {
        SchemaStatus::Current => Ok(format!("{backend}, schema current")),
        SchemaStatus::Ahead { unknown, breaking } if breaking.is_empty() => Ok(format!(
            "{backend}, schema newer by additive migration(s) {} (this node keeps serving; upgrade it)",
            unknown.join(", ")
        )),
        SchemaStatus::Fresh => Ok(format!("{backend}, empty (initialised at the first start)")),
        status => Err(cli::schema_error(&status)),
    }
}

async fn check_storage(config: &Config) -> anyhow::Result<String> {
    let store = BodyStore::open(&config.storage).context("opening the object store")?;
    let node = format!("cli-{}", std::process::id());
    store.probe(&node).await.context("probe object")?;
    Ok(format!("{store:?}: put, get and delete of a probe object"))
}

async fn check_smtp(config: &Config, listener: &str) -> anyhow::Result<String> {
    let lc = match listener {
        "inbound" => &config.smtp.listeners.inbound,
        "submission" => &config.smtp.listeners.submission,
        "submissions" => bail!("submissions speaks implicit TLS; check inbound or submission"),
        other => bail!("no listener `{other}` (inbound, submission)"),
    };
    if !lc.enabled {
        bail!("smtp.listeners.{listener} is disabled");
    }
    let addr = reachable(&lc.address, &format!("smtp.listeners.{listener}.address"))?;
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // Reads one (multi-line) reply: its code and last line.
    async fn reply(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    ) -> anyhow::Result<(u16, Vec<String>)> {
        let mut text = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
                .await
                .map_err(|_| anyhow::anyhow!("no reply within 5 s"))??
                .context("connection closed")?;
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let last = line.as_bytes().get(3) != Some(&b'-');
            text.push(line);
            if last {
                return Ok((code, text));
            }
        }
    }
    let (code, greeting) = reply(&mut lines).await?;
    if code != 220 {
        bail!("greeting: {}", greeting.join(" / "));
    }
    write.write_all(b"EHLO mairust-check\r\n").await?;
    let (code, ehlo) = reply(&mut lines).await?;
    if code != 250 {
        bail!("EHLO: {}", ehlo.join(" / "));
    }
    write.write_all(b"QUIT\r\n").await?;
    let _ = reply(&mut lines).await;
    let extensions: Vec<&str> = ehlo
        .iter()
        .skip(1)
        .map(|l| l.get(4..).unwrap_or(""))
        .collect();
    Ok(format!(
        "{addr}: {} | {}",
        greeting[0].get(4..).unwrap_or(""),
        extensions.join(", ")
    ))
}
