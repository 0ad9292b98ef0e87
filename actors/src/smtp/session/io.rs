//! The session's reads and writes, each within its bound: the idle timeouts, the DATA
//! minimum rate, the session's lifetime, and the write timeout (SPEC M2).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BoxStream, Session, State};
use crate::limits::{self, Limit};
use crate::proto::reply::{self, Reply};
use crate::shutdown::Phase;

pub(super) enum ReadOutcome {
    Data,
    Eof,
    Timeout(Deadline),
    Shutdown(Phase),
    Error(std::io::Error),
}

/// Which bound ended a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
    /// The command or DATA timeout: the client said nothing for too long.
    Idle,
    /// DATA arrived slower than the minimum rate.
    DataRate,
    /// The session's lifetime is over.
    Lifetime,
}

impl Deadline {
    pub(super) fn reply(self) -> Reply {
        match self {
            Deadline::Idle => reply::TIMEOUT,
            Deadline::DataRate => reply::DATA_TOO_SLOW,
            Deadline::Lifetime => reply::SESSION_TOO_LONG,
        }
    }
}

impl Session {
    pub(super) fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.ctx.config.smtp.limits.write_timeout_seconds)
    }

    /// Writes the collected replies; a client that does not take them within
    /// `write_timeout_seconds` (its receive window stays full) ends the session.
    pub(super) async fn flush(&mut self, stream: &mut BoxStream) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout(), write).await {
            Ok(result) => result?,
            Err(_) => {
                limits::hit(Limit::WriteTimeout);
                tracing::info!(component = "smtp", session_id = %self.id, remote = %self.remote, event = "write_timeout", "client does not read its replies; closing");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client did not read its replies",
                ));
            }
        }
        self.out.clear();
        Ok(())
    }

    /// How long the next read may wait, and which bound that is: the idle timeout of
    /// the phase, the DATA minimum rate (after a first `data_timeout_seconds` of grace,
    /// the body must average `data_min_rate_bytes_per_second`), and the session's
    /// lifetime, whichever ends first.
    fn read_deadline(&self) -> (Duration, Deadline) {
        let limits = &self.ctx.config.smtp.limits;
        let mut bound = match &self.state {
            State::Data(_) => (
                Duration::from_secs(limits.data_timeout_seconds),
                Deadline::Idle,
            ),
            _ => (
                Duration::from_secs(limits.command_timeout_seconds),
                Deadline::Idle,
            ),
        };
        if let State::Data(incoming) = &self.state
            && limits.data_min_rate_bytes_per_second > 0
        {
            let earned = Duration::try_from_secs_f64(
                incoming.bytes_in as f64 / limits.data_min_rate_bytes_per_second as f64,
            )
            .unwrap_or(Duration::MAX);
            let allowed = Duration::from_secs(limits.data_timeout_seconds).saturating_add(earned);
            let left = allowed.saturating_sub(incoming.started.elapsed());
            if left < bound.0 {
                bound = (left, Deadline::DataRate);
            }
        }
        let lifetime =
            Duration::from_secs(limits.max_session_seconds).saturating_sub(self.started.elapsed());
        if lifetime < bound.0 {
            bound = (lifetime, Deadline::Lifetime);
        }
        bound
    }

    pub(super) async fn read_more(&mut self, stream: &mut BoxStream) -> ReadOutcome {
        let (timeout, deadline) = self.read_deadline();
        // A timeout polls the read first: with bytes always waiting (a client that never
        // stops sending) a deadline already passed would never fire.
        if timeout.is_zero() {
            return ReadOutcome::Timeout(deadline);
        }
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(8192);
        }
        tokio::select! {
            read = tokio::time::timeout(timeout, stream.read_buf(&mut self.rbuf)) => match read {
                Ok(Ok(0)) => ReadOutcome::Eof,
                Ok(Ok(n)) => {
                    if let State::Data(incoming) = &mut self.state {
                        incoming.bytes_in += n as u64;
                    }
                    ReadOutcome::Data
                }
                Ok(Err(e)) => ReadOutcome::Error(e),
                Err(_) => ReadOutcome::Timeout(deadline),
            },
            changed = self.shutdown.changed() => {
                match changed {
                    Ok(()) => ReadOutcome::Shutdown(*self.shutdown.borrow_and_update()),
                    Err(_) => ReadOutcome::Shutdown(Phase::Closing),
                }
            }
        }
    }
}
