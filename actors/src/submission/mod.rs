//! Submission: the one pipeline every message passes on its way in, whether an SMTP
//! client sent it or `POST /api/v1/send` built it (SPEC M3, M4, M9, S5).
//!
//! - [`pipeline`] — [`Pipeline`]: the steps in order, from "may anything come in" to
//!   "stored durably"
//! - [`sender`] — which senders an authenticated account may use (envelope, From:)
//! - [`directory`] — the [`Directory`] of accounts the pipeline and sessions ask
//! - [`recipients`] — the recipients of one message as the policy admitted them
//! - [`received`] — the one Received header builder
//! - [`error`] — [`SubmitError`]: why a message or recipient was not taken, turned into
//!   an SMTP reply or an API error body by each boundary
//!
//! The account is recorded on every message it submits (`messages.submitted_by`, and a
//! comment in our Received header), so mail can always be traced to who sent it.

pub mod directory;
pub mod error;
pub mod pipeline;
pub mod received;
pub mod recipients;
pub mod sender;

pub use directory::Directory;
pub use error::{SenderProblem, SubmitError};
pub use pipeline::{Accepted, Pipeline, Submission};
pub use received::{Origin, Via};
pub use recipients::Recipients;
pub use sender::{Policy, Refusal, Submitter, comment_text};
