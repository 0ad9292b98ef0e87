//! DKIM signing of the mail our users submit (RFC 6376; Ed25519 per RFC 8463).
//!
//! - [`keys`] — key pairs: generation, the DNS record to publish, sealing the private
//!   key under the node's master key ([`keys::MasterKey`])
//! - [`store`] — the `dkim_keys` rows: add, rotate, remove, list, which keys sign now
//! - [`dns`] — the records a domain publishes (MX, SPF, DKIM, DMARC)
//! - [`signer`] — [`Signer`]: the submission pipeline's step that adds the
//!   DKIM-Signature headers, with the opened keys cached by row
//!
//! A private key exists in clear only in this process's memory: the database holds it
//! sealed (AES-256-GCM, bound to its domain, selector and algorithm), the master key is a
//! file of mode 0600 that no backup includes, and no answer (API, CLI, log) ever
//! contains it.

pub mod dns;
pub mod keys;
pub mod signer;
pub mod store;

pub use keys::{Algorithm, MasterKey};
pub use signer::Signer;
pub use store::DkimError;
