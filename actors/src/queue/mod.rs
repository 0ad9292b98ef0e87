//! The outbound queue (SPEC M6): mail for other domains, persisted in the database
//! before 250, delivered by QueueWorker tasks over SMTP, retried on an exponential
//! schedule, bounced with a DSN when it fails for good.
//!
//! - [`store`] — the queue tables: enqueue, claim with a lease, record, operator edits
//! - [`route`] — next hops: routes, smarthost, MX lookup behind a replaceable resolver
//! - [`client`] — outbound SMTP connections and transactions (mail-send)
//! - [`dsn`] — RFC 3464 delivery status notifications (mail-builder)
//! - [`worker`] — the QueueWorker loop (a task the Supervisor restarts)

pub mod client;
pub mod dsn;
pub mod route;
pub mod store;
pub mod worker;

pub use worker::QueueContext;
