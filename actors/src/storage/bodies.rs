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
}

impl std::fmt::Debug for BodyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl BodyStore {
    pub fn open(config: &StorageConfig) -> Result<BodyStore, BodyError> {
        match config.backend {
            StorageBackend::Fs => {
                let fs = config
                    .fs
                    .as_ref()
                    .ok_or_else(|| BodyError::Config("storage.fs missing".into()))?;
                std::fs::create_dir_all(&fs.path).map_err(|e| {
                    BodyError::Config(format!("cannot create {}: {e}", fs.path.display()))
                })?;
                let store = LocalFileSystem::new_with_prefix(&fs.path)?;
                Ok(BodyStore {
                    store: Arc::new(store),
                    fs_root: Some(fs.path.clone()),
                    fsync: fs.fsync,
                    description: format!("fs:{}", fs.path.display()),
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
                })
            }
        }
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

    pub async fn delete(&self, key: &str) -> Result<(), BodyError> {
        self.store.delete(&ObjectPath::from(key)).await?;
        Ok(())
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

    /// Deletes objects no row refers to any more, concurrently; a failure is logged
    /// and left for `db check` (an orphan object loses nothing).
    pub async fn delete_unreferenced(&self, keys: &[String]) {
        let deletes = keys.iter().map(|key| async move {
            if let Err(e) = self.delete(key).await {
                tracing::warn!(component = "storage", key = %key, error = %e, "could not delete an object no row refers to (db check finds it)");
            }
        });
        futures::future::join_all(deletes).await;
    }

    /// Stores a batch of objects and returns once all of them are durable.
    pub async fn put_batch(&self, objects: Vec<(String, Bytes)>) -> Result<(), BodyError> {
        let Some(root) = self.fs_root.clone() else {
            let puts = objects
                .into_iter()
                .map(|(key, body)| self.put_keyed(key, body));
            for result in futures::future::join_all(puts).await {
                result?;
            }
            return Ok(());
        };
        let fsync = self.fsync;
        blocking(move || write_files(&root, &objects, fsync)).await
    }

    /// Writes, reads back and deletes a probe object: the health check of SPEC O12.
    pub async fn probe(&self, node: &str) -> Result<(), BodyError> {
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

/// Threads flushing one batch's files at once.
const MAX_FLUSH_THREADS: usize = 16;

/// Writes each object as `root/key` through a temporary file and a rename, so a reader
/// never sees half an object. With `fsync`, each file's data is flushed before its
/// rename (in parallel threads for a batch, so the filesystem merges their journal
/// commits), then each directory that got new entries is flushed once.
fn write_files(
    root: &std::path::Path,
    objects: &[(String, Bytes)],
    fsync: bool,
) -> std::io::Result<()> {
    let created: Vec<Vec<std::path::PathBuf>> = if fsync && objects.len() > 1 {
        let per_thread = objects.len().div_ceil(MAX_FLUSH_THREADS);
        std::thread::scope(|scope| {
            let workers: Vec<_> = objects
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|object| write_file(root, object, true))
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
            .map(|object| write_file(root, object, fsync))
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
/// created directories (their parents need a flush too).
fn write_file(
    root: &std::path::Path,
    (key, body): &(String, Bytes),
    fsync: bool,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    use std::io::Write;
    let path = root.join(key);
    let tmp = path.with_extension("eml.tmp");
    let mut created = Vec::new();
    let mut file = match std::fs::File::create(&tmp) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut dir = tmp.parent();
            while let Some(d) = dir {
                if d.exists() || d == root {
                    break;
                }
                if let Some(parent) = d.parent() {
                    created.push(parent.to_path_buf());
                }
                dir = d.parent();
            }
            if let Some(parent) = tmp.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(&tmp)?
        }
        Err(e) => return Err(e),
    };
    file.write_all(body)?;
    if fsync {
        file.sync_data()?;
    }
    drop(file);
    std::fs::rename(&tmp, &path)?;
    Ok(created)
}
