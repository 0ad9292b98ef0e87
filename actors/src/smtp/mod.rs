//! SMTP service: the per-connection session ([`session`]), the listeners that accept
//! connections ([`listener`]) and TLS ([`tls`]).
//!
//! The wire protocol they speak is [`crate::proto`], at the crate root because the
//! accounts, storage and the queue use its types too and must not depend on this
//! module.

pub mod listener;
pub mod session;
pub mod tls;
