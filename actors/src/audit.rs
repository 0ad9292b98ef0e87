//! The audit log (SPEC O5): security events — logins, API keys, account and hook
//! changes, reloads, backups — written twice: as one JSON line appended to `audit.path`
//! (never rewritten; rotate it with the system's tools) and as a row of `audit_log`,
//! which admins read through the API and which is pruned after `audit.retention_days`.
//!
//! The file line is written first, so an event is kept even while the database is down;
//! a failed insert is logged as a warning and not retried. Every entry is also logged
//! (component `audit`, level info). File lines are escaped like the JSON log's
//! ([`crate::json_line`]): details carry client-supplied text (user names, hook URLs),
//! and no control character, DEL and C1 included, reaches the file raw.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mairust_entities::audit_entry;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Serialize;

use crate::config::AuditConfig;

/// What happened to the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// One event, built with [`Entry::success`] or [`Entry::failure`].
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// `auth.login`, `api_key.create`, `domain.delete`, `hook.update`, ...
    pub event: &'static str,
    pub outcome: Outcome,
    /// `api-key:NAME#ID`, `cli:USER`, `smtp:ADDRESS`, `api:anonymous`.
    pub actor: String,
    pub remote: Option<String>,
    pub target: Option<String>,
    pub details: serde_json::Value,
}

impl Entry {
    pub fn success(event: &'static str, actor: impl Into<String>) -> Self {
        Entry::new(event, Outcome::Success, actor.into())
    }

    pub fn failure(event: &'static str, actor: impl Into<String>) -> Self {
        Entry::new(event, Outcome::Failure, actor.into())
    }

    fn new(event: &'static str, outcome: Outcome, actor: String) -> Self {
        Entry {
            event,
            outcome,
            actor,
            remote: None,
            target: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn remote(mut self, ip: IpAddr) -> Self {
        self.remote = Some(ip.to_string());
        self
    }

    pub fn target(mut self, target: impl Display) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// Adds `key: value` to the details object.
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        if let serde_json::Value::Object(map) = &mut self.details {
            map.insert(key.to_string(), value.into());
        }
        self
    }
}

/// The line written to the file: the entry with when and where.
#[derive(Serialize)]
struct Line<'a> {
    timestamp: DateTime<Utc>,
    node: &'a str,
    #[serde(flatten)]
    entry: &'a Entry,
}

/// Writes audit entries; cheap to share (`Arc`).
pub struct AuditLog {
    db: DatabaseConnection,
    node: String,
    file: Option<(PathBuf, Mutex<File>)>,
}

impl AuditLog {
    /// Opens (creating it and its directory) the file of `config.path`, when set.
    pub fn open(
        config: &AuditConfig,
        db: DatabaseConnection,
        node: impl Into<String>,
    ) -> anyhow::Result<Arc<Self>> {
        let file = match &config.path {
            Some(path) => Some((path.clone(), Mutex::new(open_append(path)?))),
            None => None,
        };
        Ok(Arc::new(AuditLog {
            db,
            node: node.into(),
            file,
        }))
    }

    /// Opens the file at `audit.path` again: after logrotate moved it away, entries go
    /// to the new file (SIGHUP does this).
    pub fn reopen(&self) {
        if let Some((path, file)) = &self.file {
            match open_append(path) {
                Ok(f) => *file.lock().unwrap_or_else(|e| e.into_inner()) = f,
                Err(e) => {
                    tracing::error!(component = "audit", event = "audit_file_reopen_failed", error = %format!("{e:#}"), "cannot reopen the audit file; still writing to the old one")
                }
            }
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Records `entry` in the file, then in the database.
    pub async fn record(&self, entry: Entry) {
        let now = Utc::now();
        tracing::info!(
            component = "audit",
            event = entry.event,
            outcome = entry.outcome.as_str(),
            actor = %entry.actor,
            target = entry.target.as_deref().unwrap_or(""),
            remote = entry.remote.as_deref().unwrap_or(""),
            "audit: {} {}",
            entry.event,
            entry.outcome.as_str()
        );
        if let Some((path, file)) = &self.file {
            let line = Line {
                timestamp: now,
                node: &self.node,
                entry: &entry,
            };
            let mut text = file_line(&line);
            text.push('\n');
            // One write per line, on a file opened for append: lines never interleave.
            let written = file
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_all(text.as_bytes());
            if let Err(e) = written {
                tracing::error!(component = "audit", event = "audit_file_write_failed", audit_event = entry.event, path = %path.display(), error = %e, "cannot write the audit file");
            }
        }
        let row = audit_entry::ActiveModel {
            at: Set(now.into()),
            node: Set(self.node.clone()),
            event: Set(entry.event.to_string()),
            outcome: Set(entry.outcome.as_str().to_string()),
            actor: Set(truncate(entry.actor, 320)),
            remote: Set(entry.remote),
            target: Set(entry.target),
            details: Set(entry.details.to_string()),
            ..Default::default()
        };
        if let Err(e) = audit_entry::Entity::insert(row).exec(&self.db).await {
            tracing::warn!(component = "audit", event = "audit_insert_failed", audit_event = entry.event, error = %e, "audit entry not stored in the database (the file has it)");
        }
    }

    /// Records without waiting: for paths that must not wait for the database (SMTP).
    pub fn spawn(self: &Arc<Self>, entry: Entry) {
        let this = self.clone();
        tokio::spawn(async move { this.record(entry).await });
    }

    /// Deletes database entries older than `days`; returns how many.
    pub async fn prune(&self, days: u32) -> Result<u64, sea_orm::DbErr> {
        let cutoff = Utc::now()
            .checked_sub_signed(chrono::Duration::days(i64::from(days)))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let done = audit_entry::Entity::delete_many()
            .filter(audit_entry::Column::At.lt(cutoff))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected)
    }
}

/// The file's JSON line (no newline), every control character escaped.
fn file_line(line: &Line<'_>) -> String {
    // A Line always serializes: strings, a timestamp and a JSON value.
    crate::json_line::encode(line).unwrap_or_default()
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_dir::create_private_dir(dir)
            .with_context(|| format!("audit.path: cannot create {}", dir.display()))?;
    }
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("audit.path: cannot open {} for appending", path.display()))
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_builds_details_and_line() {
        let entry = Entry::failure("auth.login", "smtp:a@example.org")
            .remote(IpAddr::from([127, 0, 0, 1]))
            .target("a@example.org")
            .detail("listener", "submission");
        let line = Line {
            timestamp: Utc::now(),
            node: "n1",
            entry: &entry,
        };
        let v: serde_json::Value = serde_json::to_value(&line).unwrap();
        assert_eq!(v["event"], "auth.login");
        assert_eq!(v["outcome"], "failure");
        assert_eq!(v["actor"], "smtp:a@example.org");
        assert_eq!(v["remote"], "127.0.0.1");
        assert_eq!(v["target"], "a@example.org");
        assert_eq!(v["details"]["listener"], "submission");
        assert_eq!(v["node"], "n1");
        assert!(v["timestamp"].as_str().is_some());
    }

    #[test]
    fn file_lines_escape_every_control_character() {
        let hostile = "x\r\nforged\x1b[31m\x7f\u{9b}31m\u{85}";
        let entry = Entry::failure("auth.login", format!("smtp:{hostile}"))
            .target(hostile)
            .detail("url", format!("http://h/{hostile}"));
        let line = file_line(&Line {
            timestamp: Utc::now(),
            node: "n1",
            entry: &entry,
        });
        assert!(!line.contains(char::is_control), "{line:?}");
        for escaped in ["\\r\\n", "\\u001b", "\\u007f", "\\u009b", "\\u0085"] {
            assert!(line.contains(escaped), "{escaped} in {line}");
        }
        let back: serde_json::Value = serde_json::from_str(&line).expect("still JSON");
        assert_eq!(back["target"], hostile, "the same text once parsed");
        assert_eq!(back["actor"], format!("smtp:{hostile}"));
        assert_eq!(back["details"]["url"], format!("http://h/{hostile}"));
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("ééé".into(), 3), "é");
        assert_eq!(truncate("abc".into(), 5), "abc");
    }
}
