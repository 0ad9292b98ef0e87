//! Diagnostics (SPEC O9, O13): `mairust health check`, `mairust status`,
//! `mairust check db|storage|smtp` and `mairust logs`. Plain text for people, `--json`
//! for scripts; exit 0 when all is well, 1 when not.

use std::io::{BufRead, Read, Seek};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use mairust_actors::config::Config;
use mairust_actors::database::{self, SchemaStatus};
use mairust_actors::storage::BodyStore;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::telemetry::escape::{self, escape};

/// The address to reach a listener configured as `address` (0.0.0.0 → 127.0.0.1).
fn reachable(address: &str, key: &str) -> anyhow::Result<SocketAddr> {
    let mut addr: SocketAddr = address
        .parse()
        .with_context(|| format!("{key}: `{address}` is not IP:port"))?;
    if addr.port() == 0 {
        bail!("{key} has port 0 (chosen at start): the CLI cannot know where to connect");
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(addr)
}

/// GET `path` from the running server's HTTP address: (status, body).
async fn get(config: &Config, path: &str) -> anyhow::Result<(u16, Value)> {
    if !config.http.enabled {
        bail!("http.enabled is false: the server has no HTTP endpoint to ask");
    }
    let addr = reachable(&config.http.address, "http.address")?;
    let url = format!("http://{addr}{path}");
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("no server answers at {addr} ({e}): is it running?"))?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Whether a server answers `/health/live` at the configured HTTP address.
pub async fn server_answers(config: &Config) -> bool {
    let Ok(addr) = reachable(&config.http.address, "http.address") else {
        return false;
    };
    if !config.http.enabled {
        return false;
    }
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
    else {
        return false;
    };
    client
        .get(format!("http://{addr}/health/live"))
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
}

pub async fn health(config: &Config, action: HealthAction) -> anyhow::Result<bool> {
    let HealthAction::Check { json } = action;
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
        .with_context(|| format!("cannot connect to {}", super::redact(&config.database.url)))?;
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
        SchemaStatus::Fresh => Ok(format!("{backend}, empty (initialised at the first start)")),
        status => Err(super::schema_error(&status)),
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

#[derive(Args)]
pub struct LogsArgs {
    /// How many of the last lines to show.
    #[arg(long, default_value_t = 50)]
    tail: usize,
    /// Only this component (smtp, api, queue, storage, hook, supervisor, audit).
    #[arg(long)]
    component: Option<String>,
    /// Only this level or more severe (trace, debug, info, warn, error).
    #[arg(long)]
    level: Option<String>,
    /// Keep printing new lines as they are written (follows rotation).
    #[arg(long)]
    follow: bool,
    /// Print the JSON lines (control characters escaped, as everywhere).
    #[arg(long)]
    json: bool,
}

fn severity(level: &str) -> u8 {
    match level {
        "trace" => 0,
        "debug" => 1,
        "info" => 2,
        "warn" => 3,
        "error" => 4,
        _ => 2,
    }
}

struct LogFilter {
    component: Option<String>,
    min: u8,
    json: bool,
}

impl LogFilter {
    /// The line to print, if it passes the filter. Whatever wrote the file, no control
    /// character is printed raw: JSON strings may hold DEL and C1 raw, and a decoded
    /// string holds whatever its escapes said.
    fn show(&self, line: &str) -> Option<String> {
        let v: Value = serde_json::from_str(line).ok()?;
        if let Some(c) = &self.component
            && v["component"].as_str() != Some(c.as_str())
        {
            return None;
        }
        if severity(v["level"].as_str().unwrap_or("info")) < self.min {
            return None;
        }
        if self.json {
            return Some(escape::json_line(&v));
        }
        let text = |key: &str| escape(v[key].as_str().unwrap_or("")).into_owned();
        let mut out = format!(
            "{} {:5} {:10} {}",
            text("timestamp"),
            text("level"),
            text("component"),
            text("message")
        );
        if let Some(fields) = v.as_object() {
            for (k, value) in fields {
                if matches!(
                    k.as_str(),
                    "timestamp" | "level" | "component" | "message" | "target"
                ) {
                    continue;
                }
                let k = escape(k);
                match value {
                    Value::String(s) => out.push_str(&format!(" {k}={}", escape(s))),
                    other => out.push_str(&format!(" {k}={}", escape::json_line(other))),
                }
            }
        }
        Some(out)
    }
}

/// `mairust logs`: the JSON log file (`logging.file`, `logging.format: json`), filtered.
pub async fn logs(config: &Config, args: LogsArgs) -> anyhow::Result<bool> {
    let Some(path) = &config.logging.file else {
        bail!(
            "logging.file is not set: the server logs to standard output (see your service manager, e.g. `journalctl -u mairust`)"
        );
    };
    if config.logging.format != mairust_actors::config::LogFormat::Json {
        bail!("`mairust logs` reads JSON logs: set logging.format: json");
    }
    if let Some(level) = &args.level
        && !["trace", "debug", "info", "warn", "error"].contains(&level.as_str())
    {
        bail!("--level must be trace, debug, info, warn or error");
    }
    let filter = LogFilter {
        component: args.component.clone(),
        min: severity(args.level.as_deref().unwrap_or("trace")),
        json: args.json,
    };
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let shown: Vec<String> = text.lines().filter_map(|l| filter.show(l)).collect();
    for line in shown.iter().skip(shown.len().saturating_sub(args.tail)) {
        println!("{line}");
    }
    if args.follow {
        follow(path, file, &filter).await?;
    }
    Ok(true)
}

/// Prints lines appended to `path`, reopening it when it is rotated.
async fn follow(path: &Path, mut file: std::fs::File, filter: &LogFilter) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut inode = file.metadata()?.ino();
    let mut reader = std::io::BufReader::new(file.try_clone()?);
    let mut partial = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n > 0 {
            partial.push_str(&line);
            if partial.ends_with('\n') {
                if let Some(out) = filter.show(partial.trim_end()) {
                    println!("{out}");
                }
                partial.clear();
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Rotated: finish the old file (lines written just before the rotation), then
        // go on with the new one under the same name.
        if let Ok(meta) = std::fs::metadata(path)
            && meta.ino() != inode
        {
            let mut rest = String::new();
            reader.read_to_string(&mut rest)?;
            partial.push_str(&rest);
            for line in partial.lines() {
                if let Some(out) = filter.show(line) {
                    println!("{out}");
                }
            }
            partial.clear();
            file = std::fs::File::open(path)?;
            inode = meta.ino();
            reader = std::io::BufReader::new(file.try_clone()?);
        } else if let Ok(meta) = std::fs::metadata(path)
            && meta.len() < reader.stream_position()?
        {
            reader.rewind()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: bool) -> LogFilter {
        LogFilter {
            component: None,
            min: 0,
            json,
        }
    }

    /// A line as another program may have written it: valid JSON with DEL and C1 raw
    /// inside its strings, and C0 escaped (which decoding turns back into raw bytes).
    const FOREIGN: &str = "{\"timestamp\":\"2026-01-01T00:00:00Z\",\"level\":\"warn\",\"component\":\"smtp\",\"message\":\"auth\\r\\n2026-01-01T00:00:00Z  INFO forged\",\"user\":\"a\u{7f}b\u{9b}31m\\u001b[31m\",\"n\":1}";

    #[test]
    fn plain_output_has_no_raw_control_characters() {
        let out = filter(false).show(FOREIGN).unwrap();
        assert!(!out.contains(char::is_control), "{out:?}");
        assert!(
            out.contains(r"auth\r\n2026-01-01T00:00:00Z  INFO forged"),
            "{out}"
        );
        assert!(out.contains(r"user=a\u{7f}b\u{9b}31m\u{1b}[31m"), "{out}");
        assert!(out.contains(" n=1"), "{out}");
    }

    #[test]
    fn json_output_has_no_raw_control_characters_and_stays_json() {
        let out = filter(true).show(FOREIGN).unwrap();
        assert!(!out.contains(char::is_control), "{out:?}");
        let original: Value = serde_json::from_str(FOREIGN).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), original);
    }
}
