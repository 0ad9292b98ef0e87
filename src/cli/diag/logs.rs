//! `mairust logs`: the JSON log file filtered by component and level, printed with
//! every control character escaped, and followed across rotations.

use std::io::{BufRead, Read, Seek};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use mairust_actors::config::Config;
use serde_json::Value;

use crate::telemetry::escape::{self, escape};

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

/// A level's rank, least severe first; an unknown level counts as info.
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

/// Which lines `mairust logs` shows, and whether as JSON or as text.
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
