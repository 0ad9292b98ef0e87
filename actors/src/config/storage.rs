//! `storage`: where message bodies live (a directory or an S3 bucket) and how much of
//! them the node accepts.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Fs,
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    pub fs: Option<FsStorageConfig>,
    pub s3: Option<S3StorageConfig>,
    /// Stored message bytes at which new mail gets 452 4.3.1; 0 for no limit.
    #[serde(default)]
    pub limit_bytes: u64,
}

impl StorageConfig {
    /// The chosen backend must have its section.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match self.backend {
            StorageBackend::Fs if self.fs.is_none() => {
                Err(ConfigError::new("storage.fs", "missing for backend fs"))
            }
            StorageBackend::S3 => match &self.s3 {
                None => Err(ConfigError::new("storage.s3", "missing for backend s3")),
                Some(s3) if s3.bucket.is_empty() => {
                    Err(ConfigError::new("storage.s3.bucket", "must not be empty"))
                }
                Some(s3) if s3.access_key_id.is_some() != s3.secret_access_key.is_some() => {
                    Err(ConfigError::new(
                        "storage.s3",
                        "set both access_key_id and secret_access_key, or neither (then the AWS credential chain: environment, web identity, container or instance credentials)",
                    ))
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsStorageConfig {
    pub path: PathBuf,
    /// fsync bodies before 250 (SPEC M4). Only for throwaway test setups turn it off.
    #[serde(default = "super::yes")]
    pub fsync: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3StorageConfig {
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// For S3-compatible stores (MinIO, moto ...); AWS when absent.
    pub endpoint: Option<String>,
    /// Both or neither; without them the standard AWS credential chain is used.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    /// Key prefix inside the bucket, so several installations can share one.
    #[serde(default)]
    pub prefix: String,
}

fn default_region() -> String {
    "us-east-1".into()
}
