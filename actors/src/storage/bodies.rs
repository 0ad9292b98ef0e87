//! Message bodies as immutable objects: local files or S3 through one `object_store` API.
//!
//! Durability (SPEC M4): S3 acknowledges a PUT only once it is stored. For local files
//! [`BodyStore::put_batch`] writes a whole batch in one blocking task (temporary file,
//! fsync, rename, in the layout `object_store`'s LocalFileSystem reads), then flushes
//! each directory that got new names once: one thread hop per batch, and the files'
//! flushes run in parallel so the filesystem can merge their journal commits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::config::{StorageBackend, StorageConfig};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("object store not found: {0}")]
    NotFound(String),
    #[error("filesystem sync failed: {0}")]
    Sync(std::io::Error),
    #[error("object store configuration: {0}")]
    Config(String),
    #[error(
        "the object store directory {} does not exist (an unmounted volume or a wrong storage.fs.path?)",
        .0.display()
    )]
    RootMissing(PathBuf),
}

/// One stored object, as listed.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

#[derive(Clone)]
pub struct BodyStore {
    store: Arc<dyn ObjectStore>,
    /// For `fs`: the root directory (batch writes go there directly).
    fs_root: Option<PathBuf>,
    /// For `fs` with fsync on: flush the filesystem after a batch.
    fsync: bool,
    description: String,
    /// The identity marker the health probe expects (see [`super::identity`]).
    identity: Option<Arc<str>>,
}

impl std::fmt::Debug for BodyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl BodyStore {
    /// Opens an existing store. An `fs` root that does not exist is an error, never
    /// created here: an unmounted volume must not turn into an empty store (see
    /// [`super::identity`]; only [`BodyStore::create`] makes a root).
    pub fn open(config: &StorageConfig) -> Result<BodyStore, BodyError> {
        match config.backend {
            StorageBackend::Fs => {
                let fs = config
                    .fs
                    .as_ref()
                    .ok_or_else(|| BodyError::Config("storage.fs missing".into()))?;
                if !fs.path.is_dir() {
                    return Err(BodyError::RootMissing(fs.path.clone()));
                }
                let store = LocalFileSystem::new_with_prefix(&fs.path)?;
                Ok(BodyStore {
                    store: Arc::new(store),
                    fs_root: Some(fs.path.clone()),
                    fsync: fs.fsync,
                    description: format!("fs:{}", fs.path.display()),
                    identity: None,
                })
            }
            StorageBackend::S3 => {
                let s3 = config
                    .s3
                    .as_ref()
                    .ok_or_else(|| BodyError::Config("storage.s3 missing".into()))?;
                // Short timeouts and few retries: an unreachable store must turn into
                // a quick 451 and a health flip, not a client waiting for minutes.
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http)
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(2))
                            .with_timeout(Duration::from_secs(10))
                            .with_allow_http(s3.allow_http),
                    )
                    .with_retry(RetryConfig {
                        max_retries: 2,
                        retry_timeout: Duration::from_secs(5),
                        ..RetryConfig::default()
                    });
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder.build()?;
                let description = format!("s3:{}/{}", s3.bucket, s3.prefix);
                let store: Arc<dyn ObjectStore> = if s3.prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(PrefixStore::new(store, s3.prefix.as_str()))
                };
                Ok(BodyStore {
                    store,
                    fs_root: None,
                    fsync: false,
                    description,
                    identity: None,
                })
            }
        }
    }

    /// Opens the store, first creating an `fs` root that does not exist (0700): for a
    /// new installation or a restore, whose callers know no mail can be missing.
    pub fn create(config: &StorageConfig) -> Result<BodyStore, BodyError> {
        if let (StorageBackend::Fs, Some(fs)) = (&config.backend, &config.fs) {
            create_private_dir(&fs.path).map_err(|e| {
                BodyError::Config(format!("cannot create {}: {e}", fs.path.display()))
            })?;
        }
        Self::open(config)
    }

    /// `fs`: the root directory; `None` for S3.
    pub fn fs_root(&self) -> Option<&std::path::Path> {
        self.fs_root.as_deref()
    }

    /// What and where the store is, for messages: `fs:PATH` or `s3:BUCKET/PREFIX`.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Checks the identity marker from then on: [`BodyStore::probe`] fails when the
    /// marker is gone or differs (the volume was unmounted or swapped while running).
    pub fn expect_identity(&mut self, store_id: String) {
        self.identity = Some(Arc::from(store_id));
    }

    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), BodyError> {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from_bytes(body))
            .await?;
        Ok(())
    }

    /// `put` with an owned key, for futures that outlive the caller's borrow.
    pub async fn put_keyed(&self, key: String, body: Bytes) -> Result<(), BodyError> {
        self.put(&key, body).await
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, BodyError> {
        match self.store.get(&ObjectPath::from(key)).await {
            Ok(result) => Ok(result.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(BodyError::NotFound(key.into())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, BodyError> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object; one that is not there is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BodyError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object whose key starts with `prefix` (a whole path segment, e.g.
    /// `messages/`), for `db check` and `restore`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BodyError> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from(prefix);
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&prefix)).try_collect().await?;
        Ok(metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
                last_modified: m.last_modified,
            })
            .collect())
    }

    /// Whether any object's key starts with `prefix`; reads one listing page at most.
    pub async fn holds_any(&self, prefix: &str) -> Result<bool, BodyError> {
        use futures::StreamExt;
        let prefix = ObjectPath::from(prefix);
        match self.store.list(Some(&prefix)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Deletes objects no row refers to any more, at most `PARALLEL_DELETES` at once;
    /// returns how many could not be deleted. A failure is logged and left for `db
    /// check` (an orphan object loses nothing); one already gone counts as deleted.
    pub async fn delete_unreferenced(&self, keys: &[String]) -> usize {
        use futures::StreamExt;
        futures::stream::iter(keys)
            .map(|key| async move {
                let result = self.delete(key).await;
                if let Err(e) = &result {
                    tracing::warn!(component = "storage", event = "object_delete_failed", key = %key, error = %e, "could not delete an object no row refers to (db check finds it)");
                }
                result.is_err()
            })
            .buffer_unordered(PARALLEL_DELETES)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await
    }

    /// Stores a batch of objects and returns once all of them are durable. On failure
    /// none of them is left behind: the batch's callers are answered 4xx and their
    /// senders retry, so objects already written would only be orphans.
    pub async fn put_batch(&self, objects: Vec<(String, Bytes)>) -> Result<(), BodyError> {
        let keys: Vec<String> = objects.iter().map(|(key, _)| key.clone()).collect();
        let result = match self.fs_root.clone() {
            None => {
                let puts = objects
                    .into_iter()
                    .map(|(key, body)| self.put_keyed(key, body));
                futures::future::join_all(puts)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<()>, _>>()
                    .map(drop)
            }
            Some(root) => {
                let fsync = self.fsync;
                let marked = self.identity.is_some();
                blocking(move || write_files(&root, &objects, fsync, marked)).await
            }
        };
        if result.is_err() {
            self.delete_unreferenced(&keys).await;
        }
        result
    }

    /// Stores one object durably (on `fs`: flushed with its directory, even with
    /// `fsync` off), replacing what was there; a failure leaves the old object.
    pub async fn put_durable(&self, key: &str, body: Bytes) -> Result<(), BodyError> {
        match self.fs_root.clone() {
            None => self.put(key, body).await,
            Some(root) => {
                let objects = vec![(key.to_string(), body)];
                blocking(move || write_files(&root, &objects, true, false)).await
            }
        }
    }

    /// Writes, reads back and deletes a probe object: the health check of SPEC O12.
    /// Once the identity is known, the marker must still be there and match first, so
    /// a volume unmounted under a running node turns the store down instead of filling
    /// the mount point.
    pub async fn probe(&self, node: &str) -> Result<(), BodyError> {
        if let Some(expected) = &self.identity {
            match super::identity::read_marker(self).await? {
                Some(found) if found == **expected => {}
                Some(found) => {
                    return Err(BodyError::Config(format!(
                        "{} now belongs to store {found}, not {expected}",
                        self.description
                    )));
                }
                None => {
                    return Err(BodyError::Config(format!(
                        "{}: the identity marker is gone (volume unmounted or store replaced?)",
                        self.description
                    )));
                }
            }
        }
        let key = format!("health/probe-{node}");
        let payload = Bytes::from_static(b"mairust health probe");
        self.put(&key, payload.clone()).await?;
        let got = self.get(&key).await?;
        self.delete(&key).await?;
        if got != payload {
            return Err(BodyError::Config("probe object read back differs".into()));
        }
        Ok(())
    }
}

async fn blocking(
    f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), BodyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BodyError::Sync(std::io::Error::other(e)))?
        .map_err(BodyError::Sync)
}

/// Deletes [`BodyStore::delete_unreferenced`] runs at once.
const PARALLEL_DELETES: usize = 16;

/// Threads flushing one batch's files at once.
const MAX_FLUSH_THREADS: usize = 16;

/// `fs`: where bodies are written before their rename into place, so that what a
/// crash or a failed write leaves is in one directory, swept by
/// [`remove_stale_temporaries`], never among the bodies.
pub const TMP_DIR: &str = ".tmp";

/// Writes each object as `root/key` through a temporary file and a rename, so a reader
/// never sees half an object. With `fsync`, each file's data is flushed before its
/// rename (in parallel threads for a batch, so the filesystem merges their journal
/// commits), then each directory that got new entries is flushed once. The root must
/// exist, and with `marked` hold the identity marker (one `stat` a batch): a missing
/// root or marker is an unmounted volume, not a place to write bodies into.
fn write_files(
    root: &std::path::Path,
    objects: &[(String, Bytes)],
    fsync: bool,
    marked: bool,
) -> std::io::Result<()> {
    let present = if marked {
        root.join(super::identity::MARKER_KEY).is_file()
    } else {
        root.is_dir()
    };
    if !present {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "the object store directory {} is gone or lost its identity marker (volume unmounted?)",
                root.display()
            ),
        ));
    }
    let tmp_dir = root.join(TMP_DIR);
    if !tmp_dir.is_dir() {
        create_private_dir(&tmp_dir)?;
    }
    let created: Vec<Vec<std::path::PathBuf>> = if fsync && objects.len() > 1 {
        let per_thread = objects.len().div_ceil(MAX_FLUSH_THREADS);
        let tmp_dir = &tmp_dir;
        std::thread::scope(|scope| {
            let workers: Vec<_> = objects
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|object| write_file(root, tmp_dir, object, true))
                            .collect::<std::io::Result<Vec<_>>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("writer thread panicked")))
                })
                .collect::<std::io::Result<Vec<Vec<_>>>>()
                .map(|v| v.into_iter().flatten().collect())
        })?
    } else {
        objects
            .iter()
            .map(|object| write_file(root, &tmp_dir, object, fsync))
            .collect::<std::io::Result<_>>()?
    };
    if fsync {
        let mut dirs: Vec<std::path::PathBuf> = objects
            .iter()
            .filter_map(|(key, _)| root.join(key).parent().map(std::path::Path::to_path_buf))
            .chain(created.into_iter().flatten())
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            std::fs::File::open(&dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Writes one object; returns the directories whose entries changed because this call
/// created directories (their parents need a flush too). A failed write removes its
/// temporary file (on a full disk it would keep the space).
fn write_file(
    root: &std::path::Path,
    tmp_dir: &std::path::Path,
    (key, body): &(String, Bytes),
    fsync: bool,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    use std::io::Write;
    let path = root.join(key);
    let tmp = tmp_dir.join(format!("{}.eml.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(body)?;
        if fsync {
            file.sync_data()?;
        }
        drop(file);
        let mut created = Vec::new();
        let parent = path.parent().unwrap_or(root);
        if !parent.is_dir() {
            let mut dir = Some(parent);
            while let Some(d) = dir {
                if d.exists() || d == root {
                    break;
                }
                if let Some(up) = d.parent() {
                    created.push(up.to_path_buf());
                }
                dir = d.parent();
            }
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(created)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a directory (and its parents) readable by the owner only.
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Temporary files older than this were left by a crash or a failed write: no write
/// takes that long.
pub const STALE_TEMPORARY: Duration = Duration::from_secs(600);

/// `fs`: removes temporary body files older than `older_than` (left by a kill or a
/// failed write), and returns how many. The first sweep of a store written by an older
/// version, which put them beside the bodies, walks `messages/` once for those.
pub fn remove_stale_temporaries(
    root: &std::path::Path,
    older_than: Duration,
) -> std::io::Result<usize> {
    let tmp_dir = root.join(TMP_DIR);
    let mut removed = 0;
    if tmp_dir.is_dir() {
        removed += remove_old_temporaries(&tmp_dir, older_than, false)?;
    } else {
        let legacy = root.join("messages");
        if legacy.is_dir() {
            removed += remove_old_temporaries(&legacy, older_than, true)?;
        }
        create_private_dir(&tmp_dir)?;
    }
    Ok(removed)
}

fn is_temporary_name(entry: &std::fs::DirEntry) -> bool {
    entry
        .file_name()
        .to_str()
        .is_some_and(|name| name.ends_with(".eml.tmp"))
}

fn remove_old_temporaries(
    dir: &std::path::Path,
    older_than: Duration,
    recursive: bool,
) -> std::io::Result<usize> {
    let mut removed = 0;
    // Gone since it was listed (renamed by a writer, swept by another node): skipped.
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if file_type.is_dir() && recursive {
            removed += remove_old_temporaries(&entry.path(), older_than, true)?;
            continue;
        }
        // Only temporaries are looked at further: the legacy walk passes every body.
        if !(file_type.is_file() && is_temporary_name(&entry)) {
            continue;
        }
        // Renamed into place or removed since the listing: not ours to sweep.
        let modified = match entry.metadata().and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if modified.elapsed().unwrap_or(Duration::ZERO) >= older_than {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}
