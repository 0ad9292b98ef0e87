//! MaiRust database models (sea-orm). Models only: queries live in plain functions in
//! the crates that use them, migrations in `mairust-migration`.
//!
//! - [`domain`], [`user`], [`mailbox`]: accounts (SPEC M8)
//! - [`message`] — one row per received message, its body is one object in the store
//! - [`mailbox_message`] — the message indexed in one recipient's mailbox (SPEC M5)

pub mod domain;
pub mod mailbox;
pub mod mailbox_message;
pub mod message;
pub mod user;
