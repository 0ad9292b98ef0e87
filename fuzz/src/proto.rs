//! The files of `actors/src/proto/`, included as they are (see lib.rs).
//!
//! This is a file module rather than an inline `mod proto { ... }` in lib.rs because
//! rustc resolves `#[path]` inside an inline module relative to a directory named after
//! it (`src/proto/`), which does not exist; in a non-mod-rs file such as this one the
//! paths are relative to `src/`. Their unit tests sit behind `#[cfg(test)]` and are not
//! compiled here. The real `mod.rs` is not included: it only declares these modules and
//! re-exports two names, copied below, and anything added to it later (which might use
//! crates this fuzz crate does not have) cannot break the fuzz build.

#[path = "../../actors/src/proto/auth.rs"]
pub mod auth;
#[path = "../../actors/src/proto/command.rs"]
pub mod command;
#[path = "../../actors/src/proto/data.rs"]
pub mod data;
#[path = "../../actors/src/proto/line.rs"]
pub mod line;
#[path = "../../actors/src/proto/reply.rs"]
pub mod reply;

pub use command::{Address, Command};
pub use reply::Reply;
