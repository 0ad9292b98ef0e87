//! What a connection is, for everything that handles or counts one: the listeners and
//! sessions, the outbound client, the limits and the metrics.
//!
//! - [`ListenerKind`] — which listener accepted it, which decides its policy
//! - [`BoxStream`] — the byte stream it runs over (TCP, TLS, an in-memory pipe in tests)
//! - [`address`] — the key its client address is counted under ([`client_key`])
//!
//! It names nothing else of the crate, so all of those can use it without depending on
//! each other.

pub mod address;

pub use address::client_key;

use tokio::io::{AsyncRead, AsyncWrite};

/// Any byte stream a session or an outbound connection can run over.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}
pub type BoxStream = Box<dyn AsyncStream>;

/// Which listener accepted the connection; decides policy (SPEC M1, M3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// MX: mail for local domains from anyone.
    Inbound,
    /// Port 587: AUTH required before MAIL.
    Submission,
    /// Port 465: implicit TLS, AUTH required.
    Submissions,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Inbound => "inbound",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }

    pub fn requires_auth(self) -> bool {
        !matches!(self, ListenerKind::Inbound)
    }
}
