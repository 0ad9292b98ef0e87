//! Resource bounds that keep one hostile client from hurting everyone else: each is a
//! small piece of state shared by the sessions (and the API) of one node, testable
//! without a socket.
//!
//! - [`password`] — [`PasswordGate`]: a node-wide bound on concurrent password work
//! - [`throttle`] — [`AuthThrottle`]: failed AUTH per address and per account: delay,
//!   lockout, and audit summaries instead of one entry per guess
//! - [`memory`] — [`DataBudget`]: the node-wide budget of DATA bytes held in memory
//! - [`sending`] — [`sending::SendLimits`]: messages and recipients per hour of each
//!   account and domain, counted in the database across nodes
//!
//! Per-address limits count clients by [`crate::net::client_key`] (IPv6 by prefix).

pub mod memory;
pub mod password;
pub mod sending;
pub mod throttle;

pub use memory::{ClientShares, DataBudget, Reservation, Share};
pub use password::{Busy, PasswordGate};
pub use throttle::{Admission, AuthThrottle};

/// The limits' shared state on one node: built once by the Supervisor, held by every
/// SMTP session and the HTTP API.
pub struct NodeLimits {
    pub password: PasswordGate,
    pub auth: AuthThrottle,
    /// Memory for DATA not yet complete (half of `max_inflight_data_bytes`): sessions
    /// that find none left spool instead.
    pub buffers: DataBudget,
    /// Memory for finished bodies on their way to storage (the other half), so
    /// unfinished sessions can never take it all.
    pub data: DataBudget,
    /// Spooled DATA bytes on disk (`smtp.limits.max_spool_bytes`).
    pub spool: DataBudget,
    /// Spooled bytes per client (`smtp.limits.max_spool_bytes_per_client`).
    pub spool_shares: std::sync::Arc<ClientShares>,
    /// `smtp.limits.ipv6_prefix_length`.
    pub ipv6_prefix: u8,
}

impl NodeLimits {
    pub fn new(config: &crate::config::Config) -> std::sync::Arc<Self> {
        for limit in Limit::ALL {
            crate::metrics::metrics().limit_known(limit.name());
        }
        std::sync::Arc::new(NodeLimits {
            password: PasswordGate::new(
                config.auth.verification_slots(),
                config.auth.queued_verifications(),
            ),
            auth: AuthThrottle::new(&config.auth),
            buffers: DataBudget::new(config.smtp.limits.max_inflight_data_bytes / 2),
            data: DataBudget::new(
                config.smtp.limits.max_inflight_data_bytes
                    - config.smtp.limits.max_inflight_data_bytes / 2,
            ),
            spool_shares: ClientShares::new(config.smtp.limits.max_spool_bytes_per_client),
            spool: DataBudget::new(
                usize::try_from(config.smtp.limits.max_spool_bytes).unwrap_or(usize::MAX),
            ),
            ipv6_prefix: config.smtp.limits.ipv6_prefix_length,
        })
    }

    /// Reads the DATA budgets into their gauges (at each scrape).
    pub fn report_data_bytes(&self) {
        crate::metrics::metrics().set_data_bytes(
            self.buffers.in_use() + self.data.in_use(),
            self.spool.in_use(),
        );
    }

    /// The key per-address limits count `ip` under.
    pub fn client(&self, ip: std::net::IpAddr) -> std::net::IpAddr {
        crate::net::client_key(ip, self.ipv6_prefix)
    }
}

/// Counts a limit that was hit, by name (`mairust_limit_hits_total{limit}`).
pub fn hit(limit: Limit) {
    crate::metrics::metrics().limit_hit(limit.name());
}

/// The limits counted in `mairust_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// No password-check slot free: 454 / 503 at once.
    AuthBusy,
    /// AUTH from a locked-out address or for a locked-out account.
    AuthLocked,
    /// A session's body went to a spool file (large, or the memory budget was spent).
    DataSpooled,
    /// A finished body waited in vain for memory budget: 451.
    DataMemory,
    /// The spool was full (`max_spool_bytes`): the body is refused with 452.
    SpoolFull,
    /// DATA slower than `data_min_rate_bytes_per_second`.
    DataRate,
    /// A session reached `max_session_seconds`.
    SessionLifetime,
    /// A client did not read its replies within `write_timeout_seconds`.
    WriteTimeout,
    /// A connection from a trusted proxy found the listener's PROXY-header waits full
    /// (as many as `max_sessions`) and was closed at once.
    ProxyPending,
}

impl Limit {
    pub const ALL: [Limit; 9] = [
        Limit::AuthBusy,
        Limit::AuthLocked,
        Limit::DataSpooled,
        Limit::DataMemory,
        Limit::SpoolFull,
        Limit::DataRate,
        Limit::SessionLifetime,
        Limit::WriteTimeout,
        Limit::ProxyPending,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Limit::AuthBusy => "auth_busy",
            Limit::AuthLocked => "auth_locked",
            Limit::DataSpooled => "data_spooled",
            Limit::DataMemory => "data_memory",
            Limit::SpoolFull => "spool_full",
            Limit::DataRate => "data_rate",
            Limit::SessionLifetime => "session_lifetime",
            Limit::WriteTimeout => "write_timeout",
            Limit::ProxyPending => "proxy_pending",
        }
    }
}
