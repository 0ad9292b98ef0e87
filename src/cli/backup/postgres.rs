//! PostgreSQL plumbing: the client tools (`pg_dump`, `pg_restore`, `psql`) run with
//! the password in their environment, their versions checked against the server's
//! before a restore touches anything, and the restore itself as one transaction.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mairust_actors::config::Config;
use sea_orm::{AccessMode, DatabaseConnection, IsolationLevel, TransactionTrait};

use super::{Inventory, Manifest, TABLES, inventory};
use crate::cli;

/// The connection URL without its password, and the password (for `PGPASSWORD`): a
/// password on a command line is readable by every local user.
fn pg_url_and_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return (url.to_string(), None);
    };
    (
        format!("{scheme}://{user}@{host}{tail}"),
        Some(percent_decode(password)),
    )
}

/// `%XX` escapes decoded, as a URL's userinfo may hold them.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `pg_dump` / `pg_restore` on `url`, the password in the environment.
fn pg_command(program: &str, url: &str) -> tokio::process::Command {
    let (url, password) = pg_url_and_password(url);
    let mut cmd = tokio::process::Command::new(program);
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    cmd.arg("-d").arg(url);
    cmd
}

/// `pg_dump -Fc` of the database into `dir`, from a repeatable-read transaction whose
/// exported snapshot the dump uses, so that the inventory read in that transaction
/// describes exactly what the dump holds.
pub(super) async fn dump(
    config: &Config,
    db: &DatabaseConnection,
    dir: &Path,
) -> anyhow::Result<(PathBuf, Inventory)> {
    let dump = dir.join("mairust.pgdump");
    let txn = db
        .begin_with_config(
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        )
        .await?;
    let snapshot_id: String = cli::scalar(&txn, "SELECT pg_export_snapshot() AS s").await?;
    let inv = inventory(&txn).await?;
    let out = pg_command("pg_dump", &config.database.url)
        .args(["-Fc", "--no-owner", "--no-privileges", "--snapshot"])
        .arg(&snapshot_id)
        .arg("-f")
        .arg(&dump)
        .output()
        .await
        .context("running pg_dump (install the PostgreSQL client tools)")?;
    txn.commit().await?;
    if !out.status.success() {
        bail!(
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((dump, inv))
}

/// A `major.minor` version from `--version` output such as
/// `pg_restore (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` or `… 17devel`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut numbers = word.split('.').map(|part| {
        part.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    let major = numbers.next()??;
    let minor = numbers.next().flatten().unwrap_or(0);
    Some((major, minor))
}

/// `TOOL --version`, or an error that says how to get the tool.
async fn tool_version(tool: &str) -> anyhow::Result<(u32, u32)> {
    let out = match tokio::process::Command::new(tool)
        .arg("--version")
        .output()
        .await
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{tool} was not found on PATH: install the PostgreSQL client tools of the server's major version (Debian: postgresql-client); nothing was changed"
        ),
        Err(e) => bail!("cannot run {tool}: {e}; nothing was changed"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_version(&text) {
        Some(v) if out.status.success() => Ok(v),
        _ => bail!(
            "{tool} --version answered {:?}: not a PostgreSQL client tool; nothing was changed",
            text.trim()
        ),
    }
}

/// Everything about a PostgreSQL restore that can be known before the database is
/// touched: `pg_restore` and `psql` run, `pg_restore` is not newer than the server
/// (its SQL may use settings an older server rejects), `psql` is not older than
/// `pg_restore` (it must understand the script), the dump is readable (`pg_restore
/// --list`), was not taken from a newer server, holds MaiRust's tables and no large
/// objects (their restore commits on its own).
pub(super) async fn preflight(config: &Config, dump: &Path) -> anyhow::Result<()> {
    let restore = tool_version("pg_restore").await?;
    let psql = tool_version("psql").await?;
    let db = cli::connect(config).await?;
    let server_num: i64 = cli::scalar(
        &db,
        "SELECT current_setting('server_version_num')::bigint AS n",
    )
    .await?;
    db.close().await.ok();
    let server = (server_num / 10000) as u32;
    if restore.0 > server {
        bail!(
            "pg_restore {}.{} is newer than the PostgreSQL {server} server: its SQL may not run there; use the client tools of version {server}; nothing was changed",
            restore.0,
            restore.1
        );
    }
    if psql < restore {
        bail!(
            "psql {}.{} is older than pg_restore {}.{}: it may not understand the script pg_restore writes; install both from the same PostgreSQL client package; nothing was changed",
            psql.0,
            psql.1,
            restore.0,
            restore.1
        );
    }
    let out = tokio::process::Command::new("pg_restore")
        .arg("--list")
        .arg(dump)
        .output()
        .await
        .context("running pg_restore --list")?;
    if !out.status.success() {
        bail!(
            "pg_restore {}.{} cannot read the archive's database dump (made by a newer pg_dump, or damaged): {}; nothing was changed",
            restore.0,
            restore.1,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let list = String::from_utf8_lossy(&out.stdout);
    let header = |label: &str| {
        list.lines()
            .find_map(|l| l.trim_start_matches(';').trim().strip_prefix(label))
            .and_then(parse_version)
    };
    if let Some((from, _)) = header("Dumped from database version:")
        && from > server
    {
        bail!(
            "the dump comes from PostgreSQL {from}, newer than this PostgreSQL {server} server: restore it into PostgreSQL {from} or newer; nothing was changed"
        );
    }
    let mut tables = std::collections::BTreeSet::new();
    for line in list.lines().filter(|l| !l.starts_with(';')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.get(3..6) {
            Some(["TABLE", "public", name]) => {
                tables.insert(name.to_string());
            }
            Some([kind, ..]) if ["BLOB", "BLOBS", "LARGE"].contains(kind) => bail!(
                "the dump holds large objects, which MaiRust never writes: not a MaiRust backup? nothing was changed"
            ),
            _ => {}
        }
    }
    if let Some(missing) = TABLES
        .iter()
        .chain(&["seaql_migrations"])
        .find(|t| !tables.contains(**t))
    {
        bail!("the dump has no table {missing}: not a MaiRust database; nothing was changed");
    }
    Ok(())
}

/// Replaces the contents of schema `public` with the dump's in one transaction that
/// commits only after the whole script ran and the row counts match the manifest. The
/// previous tables are renamed aside inside that transaction and dropped at its end,
/// so until the commit every other session sees them unchanged, and any failure (the
/// dump unreadable half-way, an SQL error, a lost connection, this process killed)
/// leaves them as they were. `pg_restore` writes the script and `psql` runs it:
/// `pg_restore --single-transaction` cannot include the rename and the checks.
pub(super) async fn replace(
    config: &Config,
    dump: &Path,
    manifest: &Manifest,
) -> anyhow::Result<()> {
    use std::process::Stdio;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let aside = format!("mairust_before_restore_{}", std::process::id());
    // Waiting for another session's locks (a server still running elsewhere) ends in
    // an error rather than a hang; the script itself resets lock_timeout, so it is set
    // again before the final drop.
    let prelude = format!(
        "SET lock_timeout = '30s';\nBEGIN;\nDO $$ BEGIN\n  IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'public') THEN\n    ALTER SCHEMA public RENAME TO {aside};\n  END IF;\nEND $$;\nCREATE SCHEMA public;\n"
    );
    let mut checks = String::from("DO $$\nDECLARE n bigint;\nBEGIN\n");
    let expected = TABLES
        .iter()
        .filter_map(|t| manifest.counts.get(*t).map(|n| (*t, *n)))
        .chain([("seaql_migrations", manifest.migrations.len() as u64)]);
    for (table, rows) in expected {
        checks.push_str(&format!(
            "  SELECT count(*) INTO n FROM public.{table};\n  IF n <> {rows} THEN RAISE EXCEPTION 'restored table {table} holds % rows where the manifest says {rows}', n; END IF;\n"
        ));
    }
    checks.push_str("END $$;\n");
    let postlude = format!(
        "{checks}SET lock_timeout = '30s';\nDROP SCHEMA IF EXISTS {aside} CASCADE;\nCOMMIT;\n"
    );

    let mut script = tokio::process::Command::new("pg_restore")
        .args(["--no-owner", "--no-privileges", "--file", "-"])
        .arg(dump)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running pg_restore")?;
    let mut psql = pg_command("psql", &config.database.url)
        .args(["--no-psqlrc", "--quiet", "--no-password"])
        .args(["--set", "ON_ERROR_STOP=1"])
        .env(
            "PGCONNECT_TIMEOUT",
            config.database.connect_timeout_seconds.max(2).to_string(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running psql")?;
    let collect = |pipe: Option<tokio::process::ChildStderr>| {
        tokio::spawn(async move {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text).await;
            }
            text
        })
    };
    let script_err = collect(script.stderr.take());
    let psql_err = collect(psql.stderr.take());
    let mut to_psql = psql.stdin.take().context("psql has no input")?;
    let mut from_script = script.stdout.take().context("pg_restore has no output")?;
    let fed = async {
        to_psql.write_all(prelude.as_bytes()).await?;
        tokio::io::copy(&mut from_script, &mut to_psql).await?;
        Ok::<(), std::io::Error>(())
    }
    .await;
    // Should psql have stopped early, pg_restore now gets a broken pipe.
    drop(from_script);
    let script_status = script.wait().await.context("waiting for pg_restore")?;
    if fed.is_ok() && script_status.success() {
        // The one place the transaction may commit: the whole script went through.
        let _ = to_psql.write_all(postlude.as_bytes()).await;
    } else {
        // The connection closes without a COMMIT: PostgreSQL rolls everything back.
        let _ = psql.start_kill();
    }
    drop(to_psql);
    let psql_status = psql.wait().await.context("waiting for psql")?;
    let script_err = script_err.await.unwrap_or_default();
    let psql_err = psql_err.await.unwrap_or_default();
    if !script_status.success() {
        bail!(
            "pg_restore failed while reading the dump: {}; the transaction was rolled back and the database is as it was",
            script_err.trim()
        );
    }
    if !psql_status.success() {
        let hint = if psql_err.contains("lock timeout") {
            " (is a server still using this database?)"
        } else {
            ""
        };
        bail!(
            "restoring the dump failed{hint}: {}; the transaction was rolled back and the database is as it was",
            psql_err.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_versions_parse() {
        assert_eq!(
            parse_version("pg_restore (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some((15, 20))
        );
        assert_eq!(parse_version("psql (PostgreSQL) 17devel"), Some((17, 0)));
        assert_eq!(parse_version(" 16.4 (Ubuntu 16.4-1)"), Some((16, 4)));
        assert_eq!(parse_version("no version here"), None);
    }
}
