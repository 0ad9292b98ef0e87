//! Hooks created through the API live in the database (`hook` table), so every node
//! sees them: each node reloads them into its dispatcher at start, after an API change
//! and periodically.

use sea_orm::{DatabaseConnection, DbErr, EntityTrait, QueryOrder};

use super::dispatcher::HookDispatcher;
use crate::config::HookConfig;

impl HookDispatcher {
    /// Loads the API-defined hooks from the database (at start, after an API change,
    /// and periodically so every node sees other nodes' changes).
    pub async fn refresh(&self, db: &DatabaseConnection) -> Result<(), DbErr> {
        let rows = mairust_entities::hook::Entity::find()
            .order_by_asc(mairust_entities::hook::Column::CreatedAt)
            .all(db)
            .await?;
        self.set_api_hooks(rows.into_iter().filter_map(config_of).collect());
        Ok(())
    }
}

/// A stored hook as a [`HookConfig`]; rows that no longer parse are skipped (logged).
pub fn config_of(row: mairust_entities::hook::Model) -> Option<HookConfig> {
    let parse = |s: &str| serde_json::Value::String(s.to_string());
    let config = (|| {
        Some(HookConfig {
            event: serde_json::from_value(parse(&row.event)).ok()?,
            on_timeout: serde_json::from_value(parse(&row.on_timeout)).ok()?,
            on_error: serde_json::from_value(parse(&row.on_error)).ok()?,
            timeout_ms: u64::try_from(row.timeout_ms).ok()?,
            breaker_failures: u32::try_from(row.breaker_failures).ok()?,
            breaker_cooldown_seconds: row.breaker_cooldown_seconds,
            enabled: row.enabled,
            url: row.url.clone(),
            secret: row.secret.clone(),
            id: row.id.clone(),
        })
    })();
    if config.is_none() {
        tracing::warn!(component = "hook", hook = %row.id, event = "hook_unreadable", "stored hook unreadable, ignored");
    }
    config
}
