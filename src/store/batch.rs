//! Group commit: one writer task per store drains every queued write, runs
//! them in one database transaction (each in its own savepoint) and answers
//! each caller after the commit.
//!
//! Why a task and a channel rather than a mutex around a connection: while
//! one batch is being flushed to disk, the next one is already filling up, so
//! the number of disk flushes per second stays flat however many chargers
//! write. Per charger, order is kept because a charger's next message is only
//! handled after the answer to its previous one.

use anyhow::{anyhow, Result};
use tokio::sync::{mpsc, oneshot};

/// The most writes committed together. Large enough to amortise a flush over
/// thousands of chargers, small enough that one batch stays well under a
/// second on a slow disk.
pub const MAX_BATCH: usize = 512;

pub struct Job<Op, Out> {
    pub op: Op,
    /// `None` for writes nobody waits for (the message log).
    pub reply: Option<oneshot::Sender<Result<Out>>>,
}

/// The handle callers use; cloning it is cheap.
pub struct Writer<Op, Out> {
    tx: mpsc::Sender<Job<Op, Out>>,
}

impl<Op, Out> Clone for Writer<Op, Out> {
    fn clone(&self) -> Self {
        Writer {
            tx: self.tx.clone(),
        }
    }
}

impl<Op: Send + 'static, Out: Send + 'static> Writer<Op, Out> {
    /// A bounded queue: when the database falls behind, chargers wait for
    /// room rather than the server buffering without limit.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Job<Op, Out>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Writer { tx }, rx)
    }

    /// Queues `op` and waits until it is committed.
    pub async fn write(&self, op: Op) -> Result<Out> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                op,
                reply: Some(reply),
            })
            .await
            .map_err(|_| anyhow!("the database writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow!("the database writer dropped a write"))?
    }

    /// Queues `op` without waiting. Dropped (with a warning) if the queue is
    /// full: only used for the message log, which must not slow chargers.
    pub fn write_detached(&self, op: Op) {
        if let Err(e) = self.tx.try_send(Job { op, reply: None }) {
            tracing::warn!(
                "message log write dropped: {}",
                match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "writer stopped",
                }
            );
        }
    }
}

/// Receives up to [`MAX_BATCH`] jobs, waiting for at least one. `None` when
/// every sender is gone.
pub async fn next_batch<Op, Out>(
    rx: &mut mpsc::Receiver<Job<Op, Out>>,
    jobs: &mut Vec<Job<Op, Out>>,
) -> bool {
    jobs.clear();
    rx.recv_many(jobs, MAX_BATCH).await > 0
}

/// Answers each job of a committed (or failed) batch.
pub fn answer<Op, Out>(jobs: &mut Vec<Job<Op, Out>>, results: Result<Vec<Result<Out>>>) {
    match results {
        Ok(results) => {
            for (job, result) in jobs.drain(..).zip(results) {
                if let Some(reply) = job.reply {
                    let _ = reply.send(result);
                } else if let Err(e) = result {
                    tracing::warn!("detached write failed: {e:#}");
                }
            }
        }
        Err(e) => {
            tracing::error!("batch of {} writes failed to commit: {e:#}", jobs.len());
            let text = format!("{e:#}");
            for job in jobs.drain(..) {
                if let Some(reply) = job.reply {
                    let _ = reply.send(Err(anyhow!("commit failed: {text}")));
                }
            }
        }
    }
}
