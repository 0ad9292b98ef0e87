//! Why a message was not stored: what the StorageActor answers a caller, and what
//! recovery at start reports.

use sea_orm::DbErr;

use crate::health_state::Dependency;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("object store unavailable: {0}")]
    Storage(String),
    #[error("database unavailable: {0}")]
    Database(String),
    #[error("storage actor stopped")]
    Stopped,
}

impl StoreError {
    pub(super) fn dependency(&self) -> Dependency {
        match self {
            StoreError::Database(_) => Dependency::Database,
            _ => Dependency::Storage,
        }
    }
}

/// Why a row transaction failed: before its COMMIT (nothing committed), or at it (it
/// may have committed).
pub(super) enum RowFailure {
    Before(DbErr),
    Commit(DbErr),
}

impl From<RowFailure> for StoreError {
    fn from(failure: RowFailure) -> StoreError {
        match failure {
            RowFailure::Before(e) | RowFailure::Commit(e) => StoreError::Database(e.to_string()),
        }
    }
}
