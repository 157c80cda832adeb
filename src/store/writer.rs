//! Group commit: one writer task per store drains every queued write, runs
//! them in one database transaction and answers each caller after the commit.
//!
//! Why a task and a channel rather than a mutex around a connection: while
//! one batch is being flushed to disk, the next one is already filling up, so
//! the number of disk flushes per second stays flat however many chargers
//! write. Per charger, order is kept because a charger's next message is only
//! handled after the answer to its previous one.
//!
//! The queue is bounded and nothing is ever dropped from it: when the
//! database falls behind, senders wait for room (a charger is answered later,
//! never lied to). The message log rides the same queue without its senders
//! waiting for the commit; [`Writer::detached_pending`] says how far it lags.

use anyhow::{anyhow, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most writes committed together. Large enough to amortise a flush and
/// a handful of multi-row statements over thousands of chargers, small
/// enough that one batch stays well under a second on a slow disk.
pub const MAX_BATCH: usize = 4096;

pub struct Job<Op, Out> {
    pub op: Op,
    /// `None` for writes nobody waits for (the message log).
    pub reply: Option<oneshot::Sender<Result<Out>>>,
}

/// The handle callers use; cloning it is cheap.
pub struct Writer<Op, Out> {
    tx: mpsc::Sender<Job<Op, Out>>,
    /// Detached writes queued and not yet committed.
    detached: Arc<AtomicUsize>,
}

impl<Op, Out> Clone for Writer<Op, Out> {
    fn clone(&self) -> Self {
        Writer {
            tx: self.tx.clone(),
            detached: self.detached.clone(),
        }
    }
}

/// The writer task's end of the queue.
pub struct Queue<Op, Out> {
    rx: mpsc::Receiver<Job<Op, Out>>,
    detached: Arc<AtomicUsize>,
}

impl<Op: Send + 'static, Out: Send + 'static> Writer<Op, Out> {
    pub fn channel(capacity: usize) -> (Self, Queue<Op, Out>) {
        let (tx, rx) = mpsc::channel(capacity);
        let detached = Arc::new(AtomicUsize::new(0));
        (
            Writer {
                tx,
                detached: detached.clone(),
            },
            Queue { rx, detached },
        )
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

    /// Queues `op` without waiting for its commit (but waiting for room in
    /// the queue: nothing is dropped).
    pub async fn write_detached(&self, op: Op) {
        self.detached.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Job { op, reply: None }).await.is_err() {
            self.detached.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("detached write lost: the database writer has stopped");
        }
    }

    /// How many detached writes are queued or being committed.
    pub fn detached_pending(&self) -> usize {
        self.detached.load(Ordering::Relaxed)
    }
}

impl<Op, Out> Queue<Op, Out> {
    /// Receives up to [`MAX_BATCH`] jobs, waiting for at least one. False
    /// when every sender is gone.
    pub async fn next_batch(&mut self, jobs: &mut Vec<Job<Op, Out>>) -> bool {
        jobs.clear();
        self.rx.recv_many(jobs, MAX_BATCH).await > 0
    }

    /// Answers each job of a committed (or failed) batch: `results` holds
    /// one result per job, in order.
    pub fn answer(&self, jobs: &mut Vec<Job<Op, Out>>, results: Vec<Result<Out>>) {
        debug_assert_eq!(jobs.len(), results.len());
        for (job, result) in jobs.drain(..).zip(results) {
            match job.reply {
                Some(reply) => {
                    let _ = reply.send(result);
                }
                None => {
                    self.detached.fetch_sub(1, Ordering::Relaxed);
                    if let Err(e) = result {
                        tracing::error!("message-log write failed: {e:#}");
                    }
                }
            }
        }
    }
}
