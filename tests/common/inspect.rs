//! What a test reads back from a [`TestServer`]: rows of its database, bodies of its
//! object store, entries of its audit file, and answers of its HTTP endpoints.

use std::time::Duration;

use mairust_entities::{mailbox_message, message};
use sea_orm::{ColumnTrait, Database, DatabaseConnection, EntityTrait, QueryFilter};

use super::{TestServer, eventually, mairust_actors_config};

impl TestServer {
    pub async fn db(&self) -> DatabaseConnection {
        Database::connect(&self.backend.db_url)
            .await
            .expect("test db")
    }

    /// Stored messages whose Message-ID header is `message_id`.
    pub async fn messages_with_id(&self, message_id: &str) -> Vec<message::Model> {
        let db = self.db().await;
        let rows = message::Entity::find()
            .filter(message::Column::MessageId.eq(message_id))
            .all(&db)
            .await
            .unwrap();
        db.close().await.ok();
        rows
    }

    /// How many mailbox entries (recipients) a stored message has.
    pub async fn index_count(&self, id: &str) -> usize {
        let db = self.db().await;
        let n = mailbox_message::Entity::find()
            .filter(mailbox_message::Column::MessageId.eq(id))
            .all(&db)
            .await
            .unwrap()
            .len();
        db.close().await.ok();
        n
    }

    /// Messages in a local user's mailboxes, oldest first.
    pub async fn inbox(&self, user: &str) -> Vec<message::Model> {
        use sea_orm::QueryOrder;
        let db = self.db().await;
        let user = mairust_entities::user::Entity::find()
            .filter(mairust_entities::user::Column::Address.eq(Self::address(user)))
            .one(&db)
            .await
            .unwrap()
            .expect("user exists");
        let ids: Vec<String> = mailbox_message::Entity::find()
            .filter(mailbox_message::Column::UserId.eq(user.id))
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.message_id)
            .collect();
        let rows = message::Entity::find()
            .filter(message::Column::Id.is_in(ids))
            .order_by_asc(message::Column::Id)
            .all(&db)
            .await
            .unwrap();
        db.close().await.ok();
        rows
    }

    /// The stored body of a message, read through the server's own storage code.
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let config = mairust_actors_config(&self.config_path);
        let store = mairust_actors::storage::BodyStore::open(&config.storage).ok()?;
        store.get(key).await.ok().map(|b| b.to_vec())
    }

    /// A new admin API key, made with the CLI as an operator makes the first one.
    pub fn admin_key(&self) -> String {
        self.cli_ok(&["admin", "create-key", "--scope", "admin"], None)
            .trim()
            .to_string()
    }

    /// GET `path` (e.g. `/api/v1/audit`) with the API key `key`: the JSON answer.
    pub async fn get_json(&self, key: &str, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.http))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every entry of the audit file; each line must be a whole JSON object (read it
    /// once the entries looked for are written).
    pub fn audit_file(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The audit file's entries whose event is `event`, while the server may still be
    /// writing it: no file yet is no entry, and a line not finished yet is skipped.
    pub fn audit_file_events(&self, event: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// Keys of the stored objects under `prefix`.
    pub async fn object_keys(&self, prefix: &str) -> Vec<String> {
        let config = mairust_actors_config(&self.config_path);
        // A store directory not created yet holds nothing.
        let Ok(store) = mairust_actors::storage::BodyStore::open(&config.storage) else {
            return Vec::new();
        };
        store
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// Polls `/health/ready` until it answers `status` (true) or `timeout` passes.
    pub async fn wait_ready_status(&self, status: u16, timeout: Duration) -> bool {
        eventually(timeout, || async {
            self.http_get("/health/ready").await.0 == status
        })
        .await
    }

    /// The `/metrics` page as text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn http_get(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}
