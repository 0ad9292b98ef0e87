//! The SMTP wire protocol as pure functions over bytes: no I/O, no runtime.
//!
//! - [`line`] — splits the command stream into CRLF lines, bounded in length
//! - [`command`] — parses a line into a [`command::Command`]
//! - [`data`] — receives a DATA body (end detection, dot-unstuffing, smuggling defence)
//! - [`reply`] — reply codes and enhanced status codes as named constants
//! - [`auth`] — SASL PLAIN and LOGIN decoding
//! - [`proxy`] — the PROXY protocol header (v1, v2) a trusted load balancer sends first
//! - [`text`] — a peer's text made safe to store and quote

pub mod auth;
pub mod command;
pub mod data;
pub mod line;
pub mod proxy;
pub mod reply;
pub mod text;

pub use command::{Address, Command};
pub use reply::Reply;
