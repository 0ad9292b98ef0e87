//! The SMTP protocol parsers of `mairust-actors`, compiled on their own for fuzzing.
//!
//! `proto` (src/proto.rs) pulls in the very source files of `actors/src/proto/`
//! with `#[path]`: the same files, no copy, so the fuzzers always test the code the
//! server runs. Depending on the `mairust-actors` crate instead would build its whole
//! database, TLS and HTTP stack for every fuzz build; these files need only `std`,
//! `base64` and each other (`super::reply`), which resolves unchanged because they sit
//! under one parent module here as they do in the real crate.
//!
//! `check` holds the properties shared by several targets.

pub mod check;
pub mod proto;
