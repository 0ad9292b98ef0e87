//! SMTP: the pure protocol ([`proto`]), the per-connection session ([`session`]) and the
//! listeners that accept connections ([`listener`]).

pub mod listener;
pub mod proto;
pub mod session;
pub mod tls;
