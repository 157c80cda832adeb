//! Several nodes on one database: what each node must know of the others.
//!
//! [`Cluster`] is either a single node ([`Cluster::Single`]: SQLite, or
//! anything run alone; everything is local, exactly as fast as with no
//! cluster at all) or one node of several on one PostgreSQL
//! ([`Cluster::Postgres`], in [`postgres`]). The PostgreSQL node keeps, off
//! the group-commit writer and through a pool and a `LISTEN` connection of
//! its own:
//!
//! - **node and heartbeat**: a random node id and a row in `cluster_nodes`
//!   whose heartbeat it renews; a node silent for `CSMS_NODE_TIMEOUT` is
//!   gone, and so are its chargers;
//! - **presence**: which node holds each charger (`charger_presence`),
//!   written on connect, disconnect and takeover, never per message, with a
//!   fencing epoch bumped by each accepted connection in the same statement;
//! - **takeover**: a node told (by `NOTIFY`) that a newer epoch of one of its
//!   chargers was accepted elsewhere stops handling it and closes the old
//!   socket; the new node waits for it to let go before it reads;
//! - **command routing**: a command for a charger held by another node is a
//!   row in `cluster_commands`; `NOTIFY` carries its id to that node, which
//!   sends it (if it still holds that epoch) and writes the answer back;
//! - **events**: live events of one node are written to `cluster_events`
//!   and their ids announced, while anyone on another node listens;
//! - **leases**: the sweepers run on whichever node holds their lease
//!   (`cluster_leases`), once per cluster.
//!
//! SQLite is single-node: [`SqliteLock`] makes a second node on the same
//! file refuse to start.

pub mod postgres;

pub use postgres::PgCluster;

use anyhow::{Context, Result};
use std::sync::Arc;

/// The node's view of the cluster. Cheap to clone.
#[derive(Clone, Default)]
pub enum Cluster {
    /// One node: every charger this server knows is in its own registry.
    #[default]
    Single,
    /// One of several nodes on one PostgreSQL database.
    Postgres(Arc<PgCluster>),
}

impl Cluster {
    /// Whether work named `name`, done every `every`, is this node's to do
    /// now: always on a single node; on PostgreSQL only for the holder of
    /// its lease.
    pub async fn lease(&self, name: &str, every: std::time::Duration) -> bool {
        match self {
            Cluster::Single => true,
            Cluster::Postgres(c) => c.lease(name, every).await,
        }
    }

    /// This node's id (`None` on a single node).
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Cluster::Single => None,
            Cluster::Postgres(c) => Some(c.node_id()),
        }
    }
}

/// Holds an exclusive lock on `PATH.lock` beside a SQLite database for as
/// long as a node serves it: a second node on the same file would have its
/// own registry, sweepers and writer, and SQLite takes one writer.
pub struct SqliteLock {
    file: std::sync::Mutex<Option<std::fs::File>>,
}

impl SqliteLock {
    /// Takes the lock for the SQLite database `url` names (`None` for an
    /// in-memory database), or says which node holds it.
    pub fn acquire(url: &str) -> Result<Option<SqliteLock>> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path == ":memory:" || path.starts_with(":memory:") {
            return Ok(None);
        }
        let lock_path = format!("{path}.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening the node lock {lock_path}"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SqliteLock {
                file: std::sync::Mutex::new(Some(file)),
            })),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another csms node is already serving the SQLite database {path} \
                 (it holds {lock_path}): SQLite is single-node; to run several nodes, \
                 use PostgreSQL (CSMS_DATABASE_URL=postgres://...)"
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {lock_path}"))
            }
        }
    }

    /// Lets go of the lock (also done when dropped).
    pub fn release(&self) {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(file) = file {
            let _ = file.unlock();
        }
    }
}
