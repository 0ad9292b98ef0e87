//! Message bodies as immutable objects: local files or S3 through one `object_store` API.
//!
//! Durability (SPEC M4): S3 acknowledges a PUT only once it is stored. For local files
//! [`BodyStore::put_placed`] writes a whole batch in one blocking task, in the layout
//! `object_store`'s LocalFileSystem reads: on SQLite into files made ahead at their keys
//! with their names already flushed (one flush a body, `bodies/spares.rs`), otherwise
//! through a temporary file, fsync and rename, then one flush of each directory that got
//! new names. One thread hop per batch; the files' flushes run in parallel so the block
//! layer can merge them (`bodies/files.rs`).

mod files;
mod layout;
mod spares;

pub use files::remove_stale_temporaries;
pub use layout::{STALE_TEMPORARY, TMP_DIR};
pub use spares::{Placed, SPARE_FILES, sweep_placed};

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
use files::{Object, blocking, write_files};
use spares::Spares;

/// The AWS credential chain's variables from the environment, and nothing else: other
/// `AWS_*` variables (endpoint, signing, encryption, conditional puts ...) would change
/// the store behind config.yaml's back.
const CREDENTIAL_VARIABLES: [&str; 13] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_METADATA_ENDPOINT",
    "AWS_IMDSV1_FALLBACK",
    "AWS_TOKEN",
];

fn credential_chain_from_env() -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new();
    for name in CREDENTIAL_VARIABLES {
        if let (Ok(value), Ok(key)) = (
            std::env::var(name),
            name.to_ascii_lowercase()
                .parse::<object_store::aws::AmazonS3ConfigKey>(),
        ) {
            builder = builder.with_config(key, value);
        }
    }
    builder
}

/// The marker object at the root of the store, holding the store's identity (see
/// [`super::identity`]): its absence means the volume or bucket is not the store.
pub const MARKER_KEY: &str = "mairust-store-id";

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
    /// For `fs`: empty temporary files made ahead of the bodies.
    spares: Arc<Spares>,
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
                    spares: Arc::default(),
                })
            }
            StorageBackend::S3 => {
                let s3 = config
                    .s3
                    .as_ref()
                    .ok_or_else(|| BodyError::Config("storage.s3 missing".into()))?;
                // Keys in the configuration, or else the standard AWS credential chain:
                // AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, web
                // identity (EKS IRSA), ECS task and EKS Pod Identity credentials, then
                // instance metadata. Configured keys are never mixed with the
                // environment's (a session token from elsewhere would spoil them).
                let base = if s3.access_key_id.is_none() && s3.secret_access_key.is_none() {
                    credential_chain_from_env()
                } else {
                    AmazonS3Builder::new()
                };
                // Short timeouts and few retries: an unreachable store must turn into
                // a quick 451 and a health flip, not a client waiting for minutes.
                let mut builder = base
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
                    spares: Arc::default(),
                })
            }
        }
    }

    /// Opens the store, first creating an `fs` root that does not exist (0700): for a
    /// new installation or a restore, whose callers know no mail can be missing.
    pub fn create(config: &StorageConfig) -> Result<BodyStore, BodyError> {
        if let (StorageBackend::Fs, Some(fs)) = (&config.backend, &config.fs) {
            crate::private_dir::create_private_dir(&fs.path).map_err(|e| {
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
        Ok(self.head(key).await?.is_some())
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
        self.put_placed(
            objects
                .into_iter()
                .map(|(key, body)| (key, body, None))
                .collect(),
        )
        .await
    }

    /// [`BodyStore::put_batch`], where a body may have its file reserved ahead
    /// ([`BodyStore::take_placed`]; its key is the place's).
    pub async fn put_placed(
        &self,
        objects: Vec<(String, Bytes, Option<Placed>)>,
    ) -> Result<(), BodyError> {
        let keys: Vec<String> = objects.iter().map(|(key, ..)| key.clone()).collect();
        let result = match self.fs_root.clone() {
            None => {
                let puts = objects
                    .into_iter()
                    .map(|(key, body, _)| self.put_keyed(key, body));
                futures::future::join_all(puts)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<()>, _>>()
                    .map(drop)
            }
            Some(root) => {
                let fsync = self.fsync;
                let marked = self.identity.is_some();
                let spares = self.spares.clone();
                let objects = objects
                    .into_iter()
                    .map(|(key, body, placed)| Object { key, body, placed })
                    .collect();
                let written =
                    blocking(move || write_files(&root, objects, fsync, marked, &spares)).await;
                // The files the next batches will take, made after this one is answered.
                if written.is_ok() && self.spares.low() {
                    self.refresh_spares();
                }
                written
            }
        };
        if result.is_err() {
            self.delete_unreferenced(&keys).await;
        }
        result
    }

    /// `fs`: removes the expired files made ahead and makes new ones, on a blocking
    /// thread (after a batch, when few are left; hourly, so an idle server keeps none
    /// that old).
    pub fn refresh_spares(&self) {
        if let Some(root) = self.fs_root.clone() {
            let (spares, marked, fsync) =
                (self.spares.clone(), self.identity.is_some(), self.fsync);
            tokio::task::spawn_blocking(move || spares.refill(&root, marked, fsync));
        }
    }

    /// One object's size and time, `None` when it is not there.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, BodyError> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: meta.size,
                last_modified: meta.last_modified,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// From now on, `fs` bodies are written into files made ahead at their final place
    /// (see `bodies/files.rs`, `Spares`): only for a store one node writes (SQLite),
    /// whose StorageActor reserves them with [`BodyStore::take_placed`].
    pub fn place_spares(&self) {
        if self.fs_root.is_some() {
            self.spares.place();
        }
    }

    /// A file made ahead for one message's body, if one is ready (`fs`, after
    /// [`BodyStore::place_spares`]); its key is to be the message's object key. No file
    /// work: a lock and a pop.
    pub fn take_placed(&self) -> Option<Placed> {
        self.fs_root.as_ref()?;
        self.spares.take_placed()
    }

    /// Stores one object durably (on `fs`: flushed with its directory, even with
    /// `fsync` off), replacing what was there; a failure leaves the old object.
    pub async fn put_durable(&self, key: &str, body: Bytes) -> Result<(), BodyError> {
        match self.fs_root.clone() {
            None => self.put(key, body).await,
            Some(root) => {
                let objects = vec![Object {
                    key: key.to_string(),
                    body,
                    placed: None,
                }];
                let spares = self.spares.clone();
                blocking(move || write_files(&root, objects, true, false, &spares)).await
            }
        }
    }

    /// The identity in the marker object, if the store has one.
    pub async fn read_marker(&self) -> Result<Option<String>, BodyError> {
        match self.get(MARKER_KEY).await {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string())),
            Err(BodyError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `store_id` as the marker, durably: it must survive a power cut like the
    /// bodies do.
    pub async fn write_marker(&self, store_id: &str) -> Result<(), BodyError> {
        self.put_durable(MARKER_KEY, Bytes::from(format!("{store_id}\n")))
            .await
    }

    /// Writes, reads back and deletes a probe object: the health check of SPEC O12.
    /// Once the identity is known, the marker must still be there and match first, so
    /// a volume unmounted under a running node turns the store down instead of filling
    /// the mount point.
    pub async fn probe(&self, node: &str) -> Result<(), BodyError> {
        if let Some(expected) = &self.identity {
            match self.read_marker().await? {
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

/// Deletes [`BodyStore::delete_unreferenced`] runs at once.
const PARALLEL_DELETES: usize = 16;
