//! Recovery at start (Parallel mode): rows committed ahead of their body by a node that
//! then died are found through the `unflushed_messages` journal and removed or kept.

use std::time::Duration;

use mairust_entities::{message, unflushed_message};
use sea_orm::{DatabaseConnection, EntityTrait};
use sha2::{Digest, Sha256};

use super::bodies::{BodyError, BodyStore};
use super::envelope::hex;
use super::error::StoreError;
use super::rows::{RowChores, RowWriter, commit_batch};

/// Parallel mode, before accepting mail: the journal lists the messages whose rows were
/// committed while their object might not be durable. Those whose object is missing,
/// short or not the body the row describes (size and SHA-256: a body written in place
/// may have been cut by the crash) were never acknowledged (a crash, or a failed object
/// batch whose deletion did not commit): their rows go (mailbox and queue entries by
/// cascade), and what there is of their object. The others were complete; their
/// entries are cleared. Rows not in the journal are never looked at. Returns how many
/// rows were removed.
pub async fn recover_unflushed(
    db: &DatabaseConnection,
    bodies: &BodyStore,
) -> Result<usize, StoreError> {
    let db_err = |e: sea_orm::DbErr| StoreError::Database(e.to_string());
    let journal = unflushed_message::Entity::find()
        .all(db)
        .await
        .map_err(db_err)?;
    let mut lost = Vec::new();
    let mut lost_objects = Vec::new();
    let mut complete = Vec::new();
    for entry in journal {
        let row = message::Entity::find_by_id(entry.message_id.clone())
            .one(db)
            .await
            .map_err(db_err)?;
        let Some(row) = row else {
            // Its rows are gone already: only the entry is left.
            complete.push(entry.message_id);
            continue;
        };
        let stored = match bodies.get(&entry.object_key).await {
            Ok(body) => body.len() as i64 == row.size && hex(&Sha256::digest(&body)) == row.sha256,
            Err(BodyError::NotFound(_)) => false,
            Err(e) => return Err(StoreError::Storage(e.to_string())),
        };
        if stored {
            complete.push(entry.message_id);
        } else {
            tracing::warn!(component = "storage", event = "unflushed_row_removed", id = %entry.message_id, "removed the row of a message that was never acknowledged (its body was not stored)");
            lost.push((0, entry.message_id));
            lost_objects.push(entry.object_key);
        }
    }
    let removed = lost.len();
    let chores = RowChores {
        delete: lost,
        clear: complete,
        clear_outbound: false,
    };
    if !chores.is_empty() {
        commit_batch(
            &RowWriter::Pool(db.clone()),
            &[],
            &chores,
            true,
            Duration::ZERO,
        )
        .await
        .map_err(StoreError::from)?;
    }
    // Their rows are gone: what was written of their bodies is nobody's.
    bodies.delete_unreferenced(&lost_objects).await;
    Ok(removed)
}
