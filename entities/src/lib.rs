//! MaiRust database models (sea-orm). Models only: queries live in plain functions in
//! the crates that use them, migrations in `mairust-migration`.
//!
//! - [`domain`], [`user`], [`mailbox`]: accounts (SPEC M8)
//! - [`message`] — one row per received message, its body is one object in the store
//! - [`mailbox_message`] — the message indexed in one recipient's mailbox (SPEC M5)
//! - [`api_key`] — REST API keys (SPEC A2)
//! - [`web_session`] — signed-in users' browser sessions (the Admin UI)
//! - [`dkim_key`] — DKIM signing keys of local domains
//! - [`audit_entry`] — the audit log (SPEC O5)
//! - [`hook`] — hooks created through the API (SPEC M9)
//! - [`node_status`] — each node's latest health report (the Admin UI's dashboard)
//! - [`store_identity`], [`unflushed_message`] — the object store's expected identity and
//!   the journal of rows whose body may not be durable yet (SPEC M4)
//! - [`queue_entry`], [`queue_recipient`], [`queue_history`] — the outbound queue (SPEC M6)

pub mod api_key;
pub mod audit_entry;
pub mod dkim_key;
pub mod domain;
pub mod hook;
pub mod mailbox;
pub mod mailbox_message;
pub mod message;
pub mod node_status;
pub mod queue_entry;
pub mod queue_history;
pub mod queue_recipient;
pub mod store_identity;
pub mod unflushed_message;
pub mod user;
pub mod web_session;
