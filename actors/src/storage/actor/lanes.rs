//! How the StorageActor moves batches through its two lanes (see [`super`]): the
//! object lane's writes, the row lane's transactions with their chores, and the
//! bookkeeping that answers each caller once its message is through both, or failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{CommitMode, StorageActor, StoreError};
use crate::health_state::DependencyFailed;
use crate::storage::envelope::IncomingMessage;
use crate::storage::error::RowFailure;
use crate::storage::rows::{RowChores, commit_batch};

/// Upper bound of messages per lane batch, to bound latency and memory.
pub(super) const MAX_BATCH: usize = 256;

/// Parallel mode: how long cleared journal entries may wait for the next row batch to
/// carry them before a transaction of their own does.
const JOURNAL_CLEAR_DELAY: Duration = Duration::from_millis(100);

/// After a failed row transaction carrying deletions or journal clears, the next try
/// waits this long, doubling up to `CHORES_MAX_BACKOFF`: a failing database is not
/// hammered in a loop.
const CHORES_MIN_BACKOFF: Duration = Duration::from_millis(100);
const CHORES_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A caller whose body failed waits for the deletion of its rows at most this long:
/// when the database fails too, it is answered 451 with its rows still journalled
/// (never delivered, removed by a later transaction or the next start).
const DOOMED_ANSWER_WAIT: Duration = Duration::from_secs(30);

/// A message in a lane, by the sequence number its caller waits under.
pub(super) type Entry = (u64, Arc<IncomingMessage>);

/// A caller waiting for its message to pass both lanes.
pub(super) struct Waiter {
    pub(super) reply: oneshot::Sender<Result<(), StoreError>>,
    pub(super) object_done: bool,
    pub(super) rows_done: bool,
    /// Parallel mode: its object failed; it is answered with this error once a row
    /// transaction has deleted its rows (or `DOOMED_ANSWER_WAIT` has passed).
    pub(super) doomed: Option<(StoreError, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Objects,
    Rows,
}

impl StorageActor {
    pub(super) fn start_lanes(&mut self, ctx: &mut Context<Self>) {
        self.write_objects(ctx);
        self.commit_rows(ctx);
    }

    fn write_objects(&mut self, ctx: &mut Context<Self>) {
        if self.writing_objects || self.object_queue.is_empty() {
            return;
        }
        // Supervision tests: the actor panics here, or stops (`return`).
        crate::failpoint::failpoint!("storage_batch", |_| ctx.stop());
        self.writing_objects = true;
        let take = self.object_queue.len().min(MAX_BATCH);
        let batch: Vec<Entry> = self.object_queue.drain(..take).collect();
        let bodies = self.bodies.clone();
        let n = batch.len();
        let spans = self.child_spans(
            &batch,
            |parent| tracing::info_span!(parent: parent, "storage.put_body", batch = n),
        );
        let objects = batch
            .iter()
            .map(|(seq, m)| {
                (
                    m.object_key.clone(),
                    m.body.clone(),
                    self.placed.remove(seq),
                )
            })
            .collect();
        let fut = async move {
            let result = bodies
                .put_placed(objects)
                .await
                .map_err(|e| StoreError::Storage(e.to_string()));
            drop(spans);
            (batch, result)
        };
        ctx.spawn(fut.into_actor(self).map(|(batch, result), act, ctx| {
            act.writing_objects = false;
            if result.is_err() {
                // put_batch removed what it wrote.
                for (seq, _) in &batch {
                    act.drop_objects.remove(seq);
                }
            } else {
                act.delete_dropped_objects(&batch, ctx);
                if act.mode == CommitMode::Ordered {
                    act.row_queue.extend(batch.iter().cloned());
                }
            }
            act.lane_done(Lane::Objects, &batch, result, ctx);
            act.start_lanes(ctx);
        }));
    }

    fn commit_rows(&mut self, ctx: &mut Context<Self>) {
        if self.committing_rows {
            return;
        }
        let take = if self.rows_ahead >= MAX_BATCH {
            0
        } else {
            self.row_queue.len().min(MAX_BATCH)
        };
        let held = self
            .chores_held_until
            .is_some_and(|until| Instant::now() < until);
        let chores_due = !held
            && (!self.chores.delete.is_empty()
                || self.chores.clear_outbound
                || self.chores.clear.len() >= MAX_BATCH
                || (self.clear_due && !self.chores.clear.is_empty()));
        if take == 0 && !chores_due {
            if !held && !self.chores.clear.is_empty() {
                self.arm_clear_timer(ctx);
            }
            return;
        }
        // Free unless a restart's recovery holds it (then no message is handled).
        let Ok(permit) = self.row_gate.clone().try_acquire_owned() else {
            return;
        };
        self.committing_rows = true;
        let batch: Vec<Entry> = self.row_queue.drain(..take).collect();
        let chores = if held {
            RowChores::default()
        } else {
            self.clear_due = false;
            std::mem::take(&mut self.chores)
        };
        let writer = self.rows.clone();
        let queue = self.queue.clone();
        let journal = self.mode == CommitMode::Parallel;
        let n = batch.len();
        let spans = self.child_spans(
            &batch,
            |parent| tracing::info_span!(parent: parent, "db.commit", batch = n),
        );
        let fut = async move {
            let started = Instant::now();
            let messages: Vec<&IncomingMessage> = batch.iter().map(|(_, m)| m.as_ref()).collect();
            let result = commit_batch(&writer, &messages, &chores, journal, queue.max_age).await;
            // Only a failed COMMIT may have committed after all.
            let ambiguous = matches!(result, Err(RowFailure::Commit(_)));
            let result = result.map_err(StoreError::from);
            tracing::debug!(
                component = "storage",
                event = "rows_committed",
                messages = batch.len(),
                deleted = chores.delete.len(),
                cleared = chores.clear.len(),
                us = started.elapsed().as_micros() as u64,
                ok = result.is_ok(),
                "rows committed"
            );
            drop(spans);
            drop(permit);
            (batch, chores, result, ambiguous)
        };
        // A task of its own, not a future of the context: a restart drops the
        // context's futures, and a transaction dropped in the middle of its COMMIT may
        // still commit. The restart waits for this task instead (`row_gate`).
        let task = actix::spawn(fut);
        ctx.spawn(
            async move {
                match task.await {
                    Ok(done) => done,
                    // A panic in the transaction is the actor's: the Supervisor sees it.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    // Cancelled: the arbiter is stopping, and this context with it.
                    Err(_) => std::future::pending().await,
                }
            }
            .into_actor(self)
            .map(|(batch, chores, result, ambiguous), act, ctx| {
                act.committing_rows = false;
                act.chores_done(chores, result.is_ok(), ctx);
                if result.is_err() {
                    // Their callers get 451: objects not written yet need not be,
                    // those written are deleted. Except on PostgreSQL after a failed
                    // COMMIT, which may have committed: the objects stay (at worst
                    // an orphan for `db check`). On SQLite such rows are journalled,
                    // so the next start removes them once their objects are gone.
                    if act.mode == CommitMode::Parallel || !ambiguous {
                        act.drop_written_objects(&batch, ctx);
                    }
                    act.object_queue
                        .retain(|(seq, _)| !batch.iter().any(|(s, _)| s == seq));
                }
                act.lane_done(Lane::Rows, &batch, result, ctx);
                act.start_lanes(ctx);
            }),
        );
    }

    /// A row transaction carried `chores`: answer the doomed callers whose rows it
    /// deleted, or (it failed) keep the work for a later one, after a backoff. A doomed
    /// caller still waiting after `DOOMED_ANSWER_WAIT` is answered anyway.
    fn chores_done(&mut self, chores: RowChores, committed: bool, ctx: &mut Context<Self>) {
        if committed {
            if !chores.is_empty() {
                self.chores_backoff = Duration::ZERO;
                self.chores_held_until = None;
            }
            if chores.clear_outbound {
                self.queue.wakeup.notify_waiters();
            }
        } else if !chores.is_empty() {
            self.chores.clear.extend(chores.clear);
            self.chores.clear_outbound |= chores.clear_outbound;
            self.chores_backoff =
                (self.chores_backoff * 2).clamp(CHORES_MIN_BACKOFF, CHORES_MAX_BACKOFF);
            self.chores_held_until = Some(Instant::now() + self.chores_backoff);
            ctx.run_later(self.chores_backoff, |act, ctx| act.commit_rows(ctx));
        }
        let now = Instant::now();
        for (seq, id) in chores.delete {
            if !committed {
                self.chores.delete.push((seq, id));
            }
            let answer = match self.waiters.get(&seq).and_then(|w| w.doomed.as_ref()) {
                Some((_, answer_by)) => committed || now >= *answer_by,
                None => false,
            };
            if answer {
                let doomed = self.waiters.get_mut(&seq).and_then(|w| w.doomed.take());
                if let Some((error, _)) = doomed {
                    self.answer(seq, Err(error));
                }
            }
        }
    }

    fn arm_clear_timer(&mut self, ctx: &mut Context<Self>) {
        if self.clear_timer {
            return;
        }
        self.clear_timer = true;
        ctx.run_later(JOURNAL_CLEAR_DELAY, |act, ctx| {
            act.clear_timer = false;
            act.clear_due = true;
            act.commit_rows(ctx);
        });
    }

    /// One span per message of a batch, under that message's caller span; they close
    /// when the batch is done (so a trace shows the batch its message waited for).
    fn child_spans(
        &self,
        batch: &[Entry],
        make: impl Fn(&tracing::Span) -> tracing::Span,
    ) -> Vec<tracing::Span> {
        batch
            .iter()
            .filter_map(|(seq, _)| self.spans.get(seq))
            .map(make)
            .collect()
    }

    /// A lane finished a batch: answer the callers that need nothing more.
    fn lane_done(
        &mut self,
        lane: Lane,
        batch: &[Entry],
        result: Result<(), StoreError>,
        ctx: &mut Context<Self>,
    ) {
        if let Err(e) = &result {
            tracing::error!(component = "storage", event = "store_failed", lane = ?lane, error = %e, messages = batch.len(), "batch not stored");
            let dependency = e.dependency();
            self.health_monitor.do_send(DependencyFailed(dependency));
        }
        let mut queued = false;
        for (seq, message) in batch {
            let Some(waiter) = self.waiters.get_mut(seq) else {
                // Already answered: the other lane failed.
                continue;
            };
            if let Err(error) = &result {
                if lane == Lane::Objects && self.mode == CommitMode::Parallel {
                    let queued_rows = self.row_queue.iter().position(|(s, _)| s == seq);
                    if let Some(at) = queued_rows {
                        // Never committed: it just leaves the row queue.
                        self.row_queue.remove(at);
                    } else {
                        // Committed, or in the transaction in flight: a later
                        // transaction deletes its rows, then it is answered.
                        waiter.doomed = Some((error.clone(), Instant::now() + DOOMED_ANSWER_WAIT));
                        self.chores.delete.push((*seq, message.id.clone()));
                        continue;
                    }
                }
                self.answer(*seq, result.clone());
                continue;
            }
            // `rows_ahead` counts the waiters with rows but no object yet.
            match lane {
                Lane::Objects => {
                    if waiter.rows_done {
                        self.rows_ahead -= 1;
                    }
                    waiter.object_done = true;
                }
                Lane::Rows => {
                    if !waiter.object_done {
                        self.rows_ahead += 1;
                    }
                    waiter.rows_done = true;
                }
            }
            if waiter.doomed.is_some() {
                // Its object failed while these rows were in flight.
                continue;
            }
            if waiter.rows_done && waiter.object_done {
                if self.mode == CommitMode::Parallel {
                    self.chores.clear.push(message.id.clone());
                    self.chores.clear_outbound |= !message.outbound.is_empty();
                } else {
                    queued |= !message.outbound.is_empty();
                }
                self.answer(*seq, Ok(()));
            }
        }
        // New queue entries whose body and rows are both durable: deliver them now
        // (Parallel mode: once their journal entries are cleared, see `chores_done`).
        if queued {
            self.queue.wakeup.notify_waiters();
        }
        if !self.chores.is_empty() {
            self.commit_rows(ctx);
        }
    }

    /// Answers a caller and forgets it.
    fn answer(&mut self, seq: u64, result: Result<(), StoreError>) {
        // A file reserved for a body never written is removed.
        self.placed.remove(&seq);
        if let Some(waiter) = self.waiters.remove(&seq) {
            if waiter.rows_done && !waiter.object_done {
                self.rows_ahead -= 1;
            }
            self.spans.remove(&seq);
            let _ = waiter.reply.send(result);
        }
    }

    /// Rows failed: objects of the batch already written are deleted now, those being
    /// written once they are.
    fn drop_written_objects(&mut self, batch: &[Entry], ctx: &mut Context<Self>) {
        let mut written = Vec::new();
        for (seq, message) in batch {
            match self.waiters.get(seq) {
                Some(w) if w.object_done => written.push(message.object_key.clone()),
                // Its object failed: nothing was left of it.
                Some(w) if w.doomed.is_some() => {}
                Some(_) if !self.object_queue.iter().any(|(s, _)| s == seq) => {
                    self.drop_objects.insert(*seq);
                }
                _ => {}
            }
        }
        self.delete_objects(written, ctx);
    }

    /// An object batch is written: delete the objects whose rows failed meanwhile.
    fn delete_dropped_objects(&mut self, batch: &[Entry], ctx: &mut Context<Self>) {
        if self.drop_objects.is_empty() {
            return;
        }
        let keys = batch
            .iter()
            .filter(|(seq, _)| self.drop_objects.remove(seq))
            .map(|(_, m)| m.object_key.clone())
            .collect();
        self.delete_objects(keys, ctx);
    }

    fn delete_objects(&mut self, keys: Vec<String>, ctx: &mut Context<Self>) {
        if keys.is_empty() {
            return;
        }
        let bodies = self.bodies.clone();
        ctx.spawn(
            async move {
                bodies.delete_unreferenced(&keys).await;
            }
            .into_actor(self),
        );
    }
}
