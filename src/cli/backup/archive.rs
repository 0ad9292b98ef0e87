//! The archive format: entries appended with their size and SHA-256 recorded for the
//! manifest, the names an archive may hold, and the checks of every entry against the
//! manifest before a restore and again while it copies them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use mairust_actors::storage::envelope::hex;
use mairust_migration::MigratorTrait;
use sha2::{Digest, Sha256};

use super::{
    CONFIG_FILE, FORMAT, FileEntry, MANIFEST, Manifest, OBJECTS, PGDUMP_FILE, SQLITE_FILE,
};

/// Appends in-memory bytes, recording their size and checksum.
pub(super) fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    files: &mut Vec<FileEntry>,
    path: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    header.set_cksum();
    tar.append_data(&mut header, path, bytes)
        .with_context(|| format!("writing {path} to the archive"))?;
    files.push(FileEntry {
        path: path.to_string(),
        size: bytes.len() as u64,
        sha256: hex(&Sha256::digest(bytes)),
    });
    Ok(())
}

/// Appends a file from disk, streaming it, recording its size and checksum.
pub(super) fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    files: &mut Vec<FileEntry>,
    path: &str,
    source: &Path,
) -> anyhow::Result<()> {
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(source)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let mut f = std::fs::File::open(source)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    header.set_cksum();
    tar.append_data(&mut header, path, &mut f)
        .with_context(|| format!("writing {path} to the archive"))?;
    files.push(FileEntry {
        path: path.to_string(),
        size,
        sha256: hex(&hasher.finalize()),
    });
    Ok(())
}

/// The kinds of entry an archive may hold; anything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Database,
    Config,
    Manifest,
    Object,
}

/// What `name` is in an archive, or why it cannot be in one. Object keys are message
/// keys (`messages/…`) made of plain path segments: a restore writes them into the
/// store, and a `..` or an empty segment must never reach a filesystem path.
fn entry_kind(name: &str) -> anyhow::Result<EntryKind> {
    match name {
        SQLITE_FILE | PGDUMP_FILE => return Ok(EntryKind::Database),
        CONFIG_FILE => return Ok(EntryKind::Config),
        MANIFEST => return Ok(EntryKind::Manifest),
        _ => {}
    }
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    match name.strip_prefix(OBJECTS) {
        Some(key) if key.starts_with("messages/") && key.split('/').all(plain) => {
            Ok(EntryKind::Object)
        }
        _ => {
            bail!("the archive holds an entry named {name:?}, which `mairust backup` never writes")
        }
    }
}

/// Reads the whole archive, checks every entry against the manifest, and returns it.
/// Refused: an entry that is not a plain file, a name that appears twice (a restore
/// could install a copy other than the one checked), an entry the manifest does not
/// list or lists twice, a name `mairust backup` does not write, and a database copy
/// that is not the first entry (restore checks it before it writes any body).
pub(super) fn verify(path: &Path) -> anyhow::Result<Manifest> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Vec<u8>> = None;
    let mut database: Option<String> = None;
    let damaged = |e: std::io::Error| {
        anyhow::anyhow!(
            "{} is not a readable backup archive (truncated or damaged): {e}",
            path.display()
        )
    };
    for (index, entry) in archive.entries().map_err(damaged)?.enumerate() {
        let mut entry = entry.map_err(damaged)?;
        let name = entry
            .path()
            .map_err(damaged)?
            .to_string_lossy()
            .into_owned();
        let kind = entry_kind(&name)?;
        let entry_type = entry.header().entry_type();
        if !entry_type.is_file() {
            bail!(
                "{name} in the archive is not a plain file ({entry_type:?}): refused, `mairust backup` writes only files"
            );
        }
        if seen.contains_key(&name) || (kind == EntryKind::Manifest && manifest.is_some()) {
            bail!(
                "{name} appears more than once in the archive: refused (a restore could install a copy other than the one checked)"
            );
        }
        match kind {
            EntryKind::Manifest => {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(damaged)?;
                manifest = Some(bytes);
                continue;
            }
            EntryKind::Database => {
                if let Some(other) = &database {
                    bail!("the archive holds two database copies, {other} and {name}: refused");
                }
                if index != 0 {
                    bail!(
                        "{name} is not the archive's first entry: refused (`mairust backup` writes the database first, and a restore checks it before it writes any body)"
                    );
                }
                database = Some(name.clone());
            }
            EntryKind::Config | EntryKind::Object => {}
        }
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut entry, &mut HashWriter(&mut hasher)).map_err(damaged)?;
        seen.insert(name, (size, hex(&hasher.finalize())));
    }
    let Some(bytes) = manifest else {
        bail!(
            "{} has no manifest.json: truncated, or not made by `mairust backup`",
            path.display()
        );
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).context("manifest.json is not a valid manifest")?;
    if manifest.format != FORMAT {
        bail!(
            "backup format {} is not supported by this version (format {FORMAT})",
            manifest.format
        );
    }
    let expected_database = match manifest.database.as_str() {
        "sqlite" => SQLITE_FILE,
        "postgres" => PGDUMP_FILE,
        other => bail!("the manifest names an unknown database kind {other:?}"),
    };
    if database.as_deref() != Some(expected_database) {
        bail!(
            "the manifest describes a {} database, but the archive's database copy is {}",
            manifest.database,
            database.as_deref().unwrap_or("missing")
        );
    }
    let mut listed = std::collections::BTreeSet::new();
    for f in &manifest.files {
        if !listed.insert(f.path.as_str()) {
            bail!("the manifest lists {} twice: refused", f.path);
        }
        match seen.remove(&f.path) {
            None => bail!(
                "{} is listed in the manifest but missing from the archive",
                f.path
            ),
            Some((size, sha)) if size != f.size || sha != f.sha256 => bail!(
                "{} is damaged: {size} bytes with SHA-256 {sha}, the manifest says {} bytes with {}",
                f.path,
                f.size,
                f.sha256
            ),
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.keys().next() {
        bail!("{extra} is in the archive but not in its manifest");
    }
    let known: Vec<String> = mairust_migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    if let Some(unknown) = manifest.migrations.iter().find(|m| !known.contains(m)) {
        bail!(
            "the backup's schema has migration {unknown}, unknown to this mairust {}: restore it with the version that made it ({})",
            env!("CARGO_PKG_VERSION"),
            manifest.mairust_version
        );
    }
    Ok(manifest)
}

/// Feeds what is written to a hasher, and drops it: an entry's checksum without a copy.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies an entry into `out` and checks it against the manifest again: the archive
/// is read anew for the restore, and a file changed since `verify` read it must not be
/// installed.
pub(super) fn copy_checked<R: Read, W: Write>(
    mut entry: R,
    out: &mut W,
    listed: &FileEntry,
) -> anyhow::Result<()> {
    struct Tee<'a, W>(&'a mut W, &'a mut Sha256);
    impl<W: Write> Write for Tee<'_, W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.0.write(buf)?;
            self.1.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut entry, &mut Tee(out, &mut hasher))
        .with_context(|| format!("reading {} from the archive", listed.path))?;
    let sha = hex(&hasher.finalize());
    if size != listed.size || sha != listed.sha256 {
        bail!(
            "{} changed since the archive was verified ({size} bytes with SHA-256 {sha}): nothing was restored",
            listed.path
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_outside_the_layout_are_refused() {
        for ok in [
            SQLITE_FILE,
            PGDUMP_FILE,
            CONFIG_FILE,
            MANIFEST,
            "objects/messages/2026-11-29/18/0193.eml",
        ] {
            assert!(entry_kind(ok).is_ok(), "{ok}");
        }
        for bad in [
            "objects/messages/../../etc/passwd",
            "objects/messages//x.eml",
            "objects/messages/./x.eml",
            "objects/lost+found/x.eml",
            "objects/other/x.eml",
            "/manifest.json",
            "database/other.sqlite",
        ] {
            assert!(entry_kind(bad).is_err(), "{bad}");
        }
    }
}
