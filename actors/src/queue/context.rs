//! What every QueueWorker of a node shares: configuration, the database and object
//! store, the StorageActor (for DSNs), health, routing and client settings, and the
//! signals that wake or stop the workers.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use actix::prelude::*;
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, watch};

use super::client::ClientSettings;
use super::route::Router;
use crate::config::Config;
use crate::health_state::{DependencyFailed, HealthState};
use crate::shutdown::Phase;
use crate::storage::{BodyStore, StorageActor};

/// What every worker of a node shares.
pub struct QueueContext {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub bodies: BodyStore,
    pub storage: Addr<StorageActor>,
    pub health: Arc<HealthState>,
    pub health_monitor: Recipient<DependencyFailed>,
    pub node_id: String,
    pub router: Router,
    pub client: ClientSettings,
    /// Notified by the StorageActor when it committed new queue entries.
    pub wakeup: Arc<Notify>,
    pub shutdown: watch::Receiver<Phase>,
    /// Delivery paused because the database is down (shared so that the change is
    /// logged once, by whichever worker sees it first).
    pub paused: AtomicBool,
}
