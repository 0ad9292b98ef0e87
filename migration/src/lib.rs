//! MaiRust schema migrations. Every migration has a real `down` step; the order of
//! [`Migrator::migrations`] is the schema's version history.
//!
//! - `m20261129_000001_accounts_and_messages`: domains, users, mailboxes, messages and
//!   the per-recipient mailbox index.
//! - `m20261129_000002_outbound_queue`: queue entries, their recipients, and the
//!   delivery history.
//! - `m20261129_000003_api_keys`: REST API keys.
//! - `m20261129_000004_hooks`: hooks created through the API.
//! - `m20261130_000005_audit_log`: the audit log's database copy.
//! - `m20261202_000006_store_identity`: the object store's expected identity, and the
//!   journal of messages whose body may not be durable yet.
//! - `m20261202_000007_api_key_domains`: API keys limited to some domains.
//! - `m20261202_000008_message_submitted_by`: the account that submitted a message.
//! - `m20261203_000009_dkim_keys`: DKIM signing keys of local domains.
//! - `m20261203_000010_mail_auth`: what the sender checks and rspamd found, and every
//!   user's Junk mailbox.
//! - `m20261203_000011_send_limits`: send counters per account and domain and hour,
//!   and users' own limits.

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_accounts_and_messages;
mod m20261129_000002_outbound_queue;
mod m20261129_000003_api_keys;
mod m20261129_000004_hooks;
mod m20261130_000005_audit_log;
mod m20261202_000006_store_identity;
mod m20261202_000007_api_key_domains;
mod m20261202_000008_message_submitted_by;
mod m20261203_000009_dkim_keys;
mod m20261203_000010_mail_auth;
mod m20261203_000011_send_limits;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_accounts_and_messages::Migration),
            Box::new(m20261129_000002_outbound_queue::Migration),
            Box::new(m20261129_000003_api_keys::Migration),
            Box::new(m20261129_000004_hooks::Migration),
            Box::new(m20261130_000005_audit_log::Migration),
            Box::new(m20261202_000006_store_identity::Migration),
            Box::new(m20261202_000007_api_key_domains::Migration),
            Box::new(m20261202_000008_message_submitted_by::Migration),
            Box::new(m20261203_000009_dkim_keys::Migration),
            Box::new(m20261203_000010_mail_auth::Migration),
            Box::new(m20261203_000011_send_limits::Migration),
        ]
    }
}
