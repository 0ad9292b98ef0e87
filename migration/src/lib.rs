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
//! - `m20261203_000012_schema_compat`: which applied migrations binaries that predate
//!   them can work with (rolling upgrades).
//! - `m20261203_000013_web_sessions`: the admin role of users and their browser
//!   sessions (the Admin UI).
//!
//! Every migration declares its [`Compat`] in [`catalogue`]: `Additive` when a binary
//! of the previous release keeps working on the schema it leaves (it only adds tables,
//! or columns that are nullable or have a default, and old code never needs to fill
//! them), `Breaking` otherwise. Those before 000012 are `Breaking`: binaries that
//! predate the record cannot read it anyway.

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
mod m20261203_000012_schema_compat;
mod m20261203_000013_web_sessions;
#[cfg(feature = "test-migrations")]
mod test_release;

pub struct Migrator;

/// Whether binaries that predate a migration keep working after it (see the module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    Additive,
    Breaking,
}

/// Every migration in order, with its [`Compat`].
pub fn catalogue() -> Vec<(Box<dyn MigrationTrait>, Compat)> {
    use Compat::*;
    #[allow(unused_mut)]
    let mut all: Vec<(Box<dyn MigrationTrait>, Compat)> = vec![
        (
            Box::new(m20261129_000001_accounts_and_messages::Migration),
            Breaking,
        ),
        (
            Box::new(m20261129_000002_outbound_queue::Migration),
            Breaking,
        ),
        (Box::new(m20261129_000003_api_keys::Migration), Breaking),
        (Box::new(m20261129_000004_hooks::Migration), Breaking),
        (Box::new(m20261130_000005_audit_log::Migration), Breaking),
        (
            Box::new(m20261202_000006_store_identity::Migration),
            Breaking,
        ),
        (
            Box::new(m20261202_000007_api_key_domains::Migration),
            Breaking,
        ),
        (
            Box::new(m20261202_000008_message_submitted_by::Migration),
            Breaking,
        ),
        (Box::new(m20261203_000009_dkim_keys::Migration), Breaking),
        (Box::new(m20261203_000010_mail_auth::Migration), Breaking),
        (Box::new(m20261203_000011_send_limits::Migration), Breaking),
        (
            Box::new(m20261203_000012_schema_compat::Migration),
            Breaking,
        ),
        (Box::new(m20261203_000013_web_sessions::Migration), Additive),
    ];
    // Test builds: a "next release" of migrations, chosen at run time, so one binary
    // can act as the release with them and the release without them.
    #[cfg(feature = "test-migrations")]
    {
        let extra = std::env::var("MAIRUST_TEST_EXTRA_MIGRATIONS").unwrap_or_default();
        if extra.split(',').any(|e| e == "additive") {
            all.push((Box::new(test_release::ADDITIVE), Additive));
        }
        if extra.split(',').any(|e| e == "breaking") {
            all.push((Box::new(test_release::BREAKING), Breaking));
        }
    }
    all
}

/// Each migration's name and [`Compat`], in order.
pub fn compatibility() -> Vec<(String, Compat)> {
    catalogue()
        .into_iter()
        .map(|(m, c)| (m.name().to_string(), c))
        .collect()
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        catalogue().into_iter().map(|(m, _)| m).collect()
    }
}
