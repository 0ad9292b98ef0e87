//! A message body on its way in: the pure [`DataReceiver`], and where its bytes go when
//! they should not stay in memory. A session keeps at most `smtp.limits.data_memory_bytes`
//! of a body in memory, and only while the node's [`DataBudget`] has room for them;
//! everything else goes to an unnamed temporary file (gone when closed, also after a
//! crash) and is read back once, when the body is complete and the budget can hold it.

use std::io::SeekFrom;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::limits::{self, Limit, NodeLimits, Reservation, Share};
use crate::proto::data::DataReceiver;
use crate::proto::reply::{self, Reply};

pub(super) struct Incoming {
    pub receiver: DataReceiver,
    /// Body bytes written out so far (none for most messages).
    spool: Option<Spool>,
    /// Budget held for the receiver's buffer.
    reservation: Reservation,
    /// Spool budget held for the bytes written out: the node's, and the client's share.
    spooled: Reservation,
    share: Option<Share>,
    /// The body cannot be kept (spool unwritable: 451; spool full: 452): it is
    /// discarded as it arrives and the transaction ends with this reply.
    failed: Option<Reply>,
    /// When DATA began, and raw bytes read since: for the minimum rate.
    pub started: Instant,
    pub bytes_in: u64,
}

struct Spool {
    file: tokio::fs::File,
    len: usize,
}

/// The finished body and the budget that covers it (held until it is stored).
pub(super) struct Body {
    pub bytes: Vec<u8>,
    pub reservation: Reservation,
}

impl Incoming {
    pub fn new(receiver: DataReceiver) -> Self {
        Incoming {
            receiver,
            spool: None,
            reservation: Reservation::default(),
            spooled: Reservation::default(),
            share: None,
            failed: None,
            started: Instant::now(),
            bytes_in: 0,
        }
    }

    /// After each feed: keeps the receiver's buffer in memory while it is small and
    /// the budget has room, otherwise writes it to the spool (within the node's spool
    /// budget). `dir`: `smtp.limits.spool_dir`, the system's temporary directory when
    /// `None`.
    pub async fn settle(
        &mut self,
        limits: &NodeLimits,
        client: IpAddr,
        memory: usize,
        dir: Option<&Path>,
    ) {
        if self.failed.is_some() || self.receiver.refused() {
            // Refused at its end anyway: nothing of it needs keeping.
            drop(self.receiver.take_pending());
            self.reservation.release();
            return;
        }
        let pending = self.receiver.pending();
        if pending <= memory && limits.buffers.try_grow(&mut self.reservation, pending) {
            return;
        }
        let bytes = self.receiver.take_pending();
        self.reservation.release();
        let on_disk = self.spool.as_ref().map_or(0, |s| s.len) + bytes.len();
        if !limits
            .spool_shares
            .try_grow(&mut self.share, client, on_disk as u64)
        {
            limits::hit(Limit::SpoolFull);
            tracing::warn!(component = "smtp", event = "spool_full", remote = %client, "this client's spooled bodies reached smtp.limits.max_spool_bytes_per_client; this message gets 452");
            self.give_up(reply::STORAGE_FULL);
            return;
        }
        if !limits.spool.try_grow(&mut self.spooled, on_disk) {
            limits::hit(Limit::SpoolFull);
            tracing::warn!(
                component = "smtp",
                event = "spool_full",
                "spooled bodies reached smtp.limits.max_spool_bytes; this message gets 452"
            );
            self.give_up(reply::STORAGE_FULL);
            return;
        }
        let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        if let Err(e) = self.spool_out(&bytes, &dir).await {
            tracing::warn!(component = "smtp", event = "spool_failed", dir = %dir.display(), error = %e, "cannot spool a message body; the transaction gets 451");
            self.give_up(reply::TEMPFAIL_SYSTEM);
        }
    }

    /// The body cannot be kept: free its file and budget now, answer `reply` at its end.
    fn give_up(&mut self, reply: Reply) {
        self.failed = Some(reply);
        self.spool = None;
        self.spooled.release();
        self.share = None;
    }

    async fn spool_out(&mut self, bytes: &[u8], dir: &Path) -> std::io::Result<()> {
        let spool = match &mut self.spool {
            Some(spool) => spool,
            None => {
                limits::hit(Limit::DataSpooled);
                let dir = dir.to_path_buf();
                let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                    .await
                    .map_err(std::io::Error::other)??;
                self.spool.insert(Spool {
                    file: tokio::fs::File::from_std(file),
                    len: 0,
                })
            }
        };
        spool.file.write_all(bytes).await?;
        spool.len += bytes.len();
        Ok(())
    }

    /// The whole body after `header`, in memory and covered by the budget for finished
    /// bodies, or the reply that refuses or defers it. `copies`: how many times its size
    /// the caller will hold at once (hook calls encode it), at most the whole budget.
    pub async fn finish(
        self,
        header: Vec<u8>,
        limits: &NodeLimits,
        copies: usize,
        wait: Duration,
    ) -> Result<Body, Reply> {
        let budget = &limits.data;
        let Incoming {
            receiver,
            spool,
            reservation: buffer,
            failed,
            ..
        } = self;
        let rest = receiver.finish()?;
        if let Some(reply) = failed {
            return Err(reply);
        }
        let spooled = spool.as_ref().map_or(0, |s| s.len);
        let total = header.len() + spooled + rest.len();
        // The unfinished buffer's budget (covering `rest`) is held until the finished
        // body's is taken, so the bytes waiting are counted somewhere all along.
        let reservation = budget.reserve_body(total, copies, wait).await;
        drop(buffer);
        let Some(reservation) = reservation else {
            tracing::warn!(
                component = "smtp",
                event = "data_memory_exhausted",
                size = total,
                "no memory budget for a finished body (smtp.limits.max_inflight_data_bytes); 451"
            );
            return Err(reply::SYSTEM_BUSY);
        };
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(&header);
        if let Some(mut spool) = spool {
            let read = async {
                spool.file.flush().await?;
                spool.file.seek(SeekFrom::Start(0)).await?;
                (&mut spool.file)
                    .take(spool.len as u64)
                    .read_to_end(&mut bytes)
                    .await
            };
            match read.await {
                Ok(n) if n == spool.len => {}
                Ok(n) => {
                    tracing::warn!(
                        component = "smtp",
                        event = "spool_failed",
                        expected = spool.len,
                        read = n,
                        "spooled body came back short; 451"
                    );
                    return Err(reply::TEMPFAIL_SYSTEM);
                }
                Err(e) => {
                    tracing::warn!(component = "smtp", event = "spool_failed", error = %e, "cannot read a spooled body back; 451");
                    return Err(reply::TEMPFAIL_SYSTEM);
                }
            }
        }
        bytes.extend_from_slice(&rest);
        Ok(Body { bytes, reservation })
    }
}
