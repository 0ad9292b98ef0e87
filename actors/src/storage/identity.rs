//! The object store's identity (SPEC M4: an acknowledged message is never lost).
//!
//! A body store that is not where the database expects it (an unmounted volume, a wrong
//! `storage.fs.path`, another installation's bucket) must stop the node, not make every
//! stored message look lost. The store holds a marker object, [`MARKER_KEY`], with an
//! identity the database holds too (`store_identity`). [`open_verified`] runs before
//! anything touches the store and refuses to start, naming the store, when:
//!
//! - the `fs` root is missing and the database holds messages or an identity;
//! - the marker is missing while the database has an identity and messages (store empty
//!   or replaced);
//! - the marker names another identity, or the database has none (and no messages
//!   whose bodies are there) but the store does and holds bodies;
//! - a large share of the newest rows have no body.
//!
//! Only a database without messages and without an identity gets a new store root and
//! marker (and only for a store without bodies). An installation from before the marker
//! adopts its store when the newest rows' bodies are there. `mairust db adopt-store` is
//! the operator's explicit override.

use chrono::Utc;
use mairust_entities::{message, store_identity, unflushed_message};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::bodies::{BodyError, BodyStore, MARKER_KEY};
use crate::config::StorageConfig;

/// How long after the database took its identity a missing marker may still be
/// written (see [`open_verified`]).
const FRESH_IDENTITY: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// How many of the newest rows are checked for their body at start.
pub const SAMPLE_ROWS: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "{0}; this database has used a store before, so none is created afresh: mount or restore it, fix storage in the configuration, or (if its bodies are really gone) run `mairust db adopt-store`"
    )]
    Missing(String),
    #[error(
        "the object store {store} has no identity marker ({MARKER_KEY}) although this database expects store {expected}: it is empty or not the store of this database (an unmounted volume, a wrong path or bucket?); mount or restore it, or run `mairust db adopt-store` to accept it"
    )]
    MarkerMissing { store: String, expected: String },
    #[error(
        "the object store {store} belongs to another database (its marker says {found}, this database expects {expected}); fix storage or database.url in the configuration"
    )]
    Foreign {
        store: String,
        found: String,
        expected: String,
    },
    #[error(
        "the object store {store} belongs to database {found}, but this database has none: a wrong database.url, or a new database beside an old store? Run `mairust db adopt-store` to tie them"
    )]
    Unclaimed { store: String, found: String },
    #[error(
        "the object store {store} holds message bodies but no identity marker, and this database holds no messages: a wrong database.url, or a new database beside an old store? Run `mairust db adopt-store` to tie them"
    )]
    Unowned { store: String },
    #[error(
        "{missing} of the newest {sampled} messages have no body in the object store {store}: the store is not the one these rows were written to (wrong path, bucket or prefix, or a partial restore?); nothing was deleted. Restore the bodies, or run `mairust db check` to see every missing one"
    )]
    BodiesMissing {
        store: String,
        missing: usize,
        sampled: usize,
    },
    #[error("{0}")]
    Store(#[from] BodyError),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// Opens the object store and checks it is this database's (module documentation).
pub async fn open_verified(
    config: &StorageConfig,
    db: &DatabaseConnection,
) -> Result<BodyStore, IdentityError> {
    let identity = store_identity::Entity::find_by_id(1).one(db).await?;
    // Taken moments ago by a start that died before writing the marker, or by another
    // node starting now: the marker may be written. Older, a missing marker is a store
    // that is not mounted.
    let identity_fresh = identity
        .as_ref()
        .is_some_and(|row| Utc::now() - row.created_at.to_utc() < FRESH_IDENTITY);
    let expected = identity.map(|row| row.store_id);
    let holds_messages = message::Entity::find()
        .select_only()
        .column(message::Column::Id)
        .limit(1)
        .into_tuple::<String>()
        .one(db)
        .await?
        .is_some();
    let mut bodies = match BodyStore::open(config) {
        Ok(bodies) => bodies,
        // Only a database that never had a store gets a new root: one with an identity
        // had a store, which is probably not mounted.
        Err(e @ BodyError::RootMissing(_)) => {
            if holds_messages || expected.is_some() {
                return Err(IdentityError::Missing(e.to_string()));
            }
            BodyStore::create(config)?
        }
        Err(e) => return Err(e.into()),
    };
    let store = bodies.describe().to_string();
    let found = bodies.read_marker().await?;
    let store_id = match (expected, found) {
        (Some(expected), Some(found)) if expected == found => {
            check_recent_bodies(db, &bodies).await?;
            expected
        }
        (Some(expected), Some(found)) => {
            return Err(IdentityError::Foreign {
                store,
                found,
                expected,
            });
        }
        // No message can be missing: a start that died before writing the marker, or
        // another node starting at the same time.
        (Some(expected), None) if !holds_messages && identity_fresh => {
            bodies.write_marker(&expected).await?;
            expected
        }
        (Some(expected), None) => return Err(IdentityError::MarkerMissing { store, expected }),
        // The database lost its identity (a migration rolled back and applied again,
        // a restore of an older backup) but its newest bodies are here: this is its
        // store. Without messages, only a store without bodies is taken: nothing on
        // either side can be lost then.
        (None, Some(found)) if holds_messages || !bodies.holds_any("messages/").await? => {
            check_recent_bodies(db, &bodies).await?;
            let store_id = claim(db, &found).await?;
            if store_id != found {
                return Err(IdentityError::Foreign {
                    store,
                    found,
                    expected: store_id,
                });
            }
            tracing::info!(component = "storage", event = "store_identity_restored", store = %store, store_id = %store_id, "the database took the identity of its object store");
            store_id
        }
        (None, Some(found)) => return Err(IdentityError::Unclaimed { store, found }),
        // Bodies but no marker, and no messages here: a store from before the marker
        // beside a wrong or new database.
        (None, None) if !holds_messages && bodies.holds_any("messages/").await? => {
            return Err(IdentityError::Unowned { store });
        }
        (None, None) => {
            // A new installation, or one from before the marker: check first, so an
            // old installation pointed at the wrong store is not tied to it.
            check_recent_bodies(db, &bodies).await?;
            // Nodes starting together agree on the first identity the database took.
            let store_id = claim(db, &uuid::Uuid::new_v4().to_string()).await?;
            bodies.write_marker(&store_id).await?;
            tracing::info!(component = "storage", event = "store_identity_created", store = %store, store_id = %store_id, existing_messages = holds_messages, "object store tied to this database");
            store_id
        }
    };
    bodies.expect_identity(store_id);
    Ok(bodies)
}

/// The identity this database expects, if it has one yet.
pub async fn database_identity(db: &DatabaseConnection) -> Result<Option<String>, sea_orm::DbErr> {
    Ok(store_identity::Entity::find_by_id(1)
        .one(db)
        .await?
        .map(|row| row.store_id))
}

/// After a restore: the store takes the restored database's identity (when the backup
/// has one; an older schema gets it at its first start). Returns it.
pub async fn mark_restored(
    db: &DatabaseConnection,
    bodies: &BodyStore,
) -> Result<Option<String>, IdentityError> {
    let Ok(Some(store_id)) = database_identity(db).await else {
        return Ok(None);
    };
    bodies.write_marker(&store_id).await?;
    Ok(Some(store_id))
}

/// Writes `store_id` as the marker, then as the database's identity (replacing both):
/// `mairust db adopt-store`. A crash between leaves a marker the database does not know,
/// which the next start refuses rather than accepting a store it cannot vouch for.
pub async fn tie(
    db: &DatabaseConnection,
    bodies: &BodyStore,
    store_id: &str,
) -> Result<(), IdentityError> {
    bodies.write_marker(store_id).await?;
    store_identity::Entity::insert(identity_row(store_id))
        .on_conflict(
            OnConflict::column(store_identity::Column::Id)
                .update_columns([
                    store_identity::Column::StoreId,
                    store_identity::Column::CreatedAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Records `store_id` as the database's identity unless it has one already; returns
/// the one it has.
async fn claim(db: &DatabaseConnection, store_id: &str) -> Result<String, IdentityError> {
    store_identity::Entity::insert(identity_row(store_id))
        .on_conflict_do_nothing_on([store_identity::Column::Id])
        .exec(db)
        .await?;
    database_identity(db).await?.ok_or_else(|| {
        IdentityError::Database(sea_orm::DbErr::RecordNotFound("store_identity".into()))
    })
}

fn identity_row(store_id: &str) -> store_identity::ActiveModel {
    store_identity::ActiveModel {
        id: Set(1),
        store_id: Set(store_id.to_string()),
        created_at: Set(Utc::now().into()),
    }
}

/// How many of the newest rows (not journalled as unflushed) have their body.
pub async fn sample_recent_bodies(
    db: &DatabaseConnection,
    bodies: &BodyStore,
) -> Result<(usize, usize), IdentityError> {
    let unflushed: Vec<String> = unflushed_message::Entity::find()
        .select_only()
        .column(unflushed_message::Column::MessageId)
        .into_tuple()
        .all(db)
        .await?;
    let keys: Vec<String> = message::Entity::find()
        .select_only()
        .column(message::Column::ObjectKey)
        .filter(message::Column::Id.is_not_in(unflushed))
        .order_by_desc(message::Column::Id)
        .limit(SAMPLE_ROWS)
        .into_tuple()
        .all(db)
        .await?;
    let checks = keys.iter().map(|key| bodies.exists(key));
    let mut missing = 0;
    for present in futures::future::join_all(checks).await {
        if !present? {
            missing += 1;
        }
    }
    Ok((missing, keys.len()))
}

/// Refuses when a large share (a quarter or more) of the newest rows have no body: one
/// lost body is a matter for `db check`, a quarter is the wrong store.
async fn check_recent_bodies(
    db: &DatabaseConnection,
    bodies: &BodyStore,
) -> Result<(), IdentityError> {
    let (missing, sampled) = sample_recent_bodies(db, bodies).await?;
    if missing > 0 && missing * 4 >= sampled {
        return Err(IdentityError::BodiesMissing {
            store: bodies.describe().to_string(),
            missing,
            sampled,
        });
    }
    if missing > 0 {
        tracing::warn!(
            component = "storage",
            event = "bodies_missing",
            missing,
            sampled,
            "some of the newest messages have no body in the object store; run `mairust db check`"
        );
    }
    Ok(())
}
