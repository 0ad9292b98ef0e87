//! The outbound queue (SPEC M6): mail for other domains, persisted in the database
//! before 250, delivered by QueueWorker tasks over SMTP, retried on an exponential
//! schedule, bounced with a DSN when it fails for good.
//!
//! - [`store`] — the queue tables as workers use them: enqueue, claim with a lease, record
//! - [`admin`] — the operator's views and edits (`mairust queue`, `/api/v1/queue`)
//! - [`attempt`] — claimed entries and what an attempt did to each recipient
//! - [`reply`] — the typed replies the queue records (remote or its own), named ones
//! - [`route`] — next hops: routes, smarthost, MX lookup behind a replaceable resolver
//! - [`client`] — outbound SMTP connections and transactions (mail-send)
//! - [`context`] — what every worker of a node shares
//! - [`worker`] — the QueueWorker loop (a task the Supervisor restarts): claim, deliver,
//!   bounce, record, again
//! - [`deliver`] — one claimed batch, grouped by destination, one connection each
//! - [`bodies`] — loading that batch's message bodies within `queue.max_batch_bytes`
//! - [`bounce`] — expiry and DSNs for what failed for good
//! - [`dsn`] — RFC 3464 delivery status notifications (mail-builder)

pub mod admin;
pub mod attempt;
mod bodies;
mod bounce;
pub mod client;
pub mod context;
mod deliver;
pub mod dsn;
pub mod reply;
pub mod route;
pub mod store;
pub mod worker;

pub use context::QueueContext;
