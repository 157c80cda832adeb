//! One node of several on one PostgreSQL database (see [`super`]).
//!
//! Everything here uses a small pool of its own and one `LISTEN`
//! connection, never the store's group-commit writer: a command, a presence
//! change or a heartbeat never waits for a batch of meter values, and a
//! `NOTIFY` never rides (and never locks) a hot write transaction. Each
//! statement that notifies is an autocommit statement of its own.
//!
//! Two channels: `csms_cluster`, heard by every node (presence changes
//! `p EPOCH\tNODE\tCHARGER`, releases `r CHARGER\tCHARGER…`, events `e NODE IDS`,
//! listener counts `l`), and `csms_node_{id}`, this node's own (commands
//! to send `c ID`, answers to collect `a ID`). Payloads carry ids, never
//! the command or event itself. A notification sent while the `LISTEN`
//! connection was down is lost: after every (re)connect the node looks up
//! what it may have missed (commands addressed to it, its chargers'
//! epochs), and a node waiting for an answer looks at the row itself every
//! `node_timeout`.

use crate::charger::{CommandError, ConnectionInfo, Registry};
use crate::engine::events::{Elsewhere, Event, Events, NAMES};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

const CLUSTER_CHANNEL: &str = "csms_cluster";
/// Event ids announced in one notification (well under the 8,000 bytes).
const EVENT_BATCH: usize = 200;
/// Live events are kept this long for the other nodes to read.
const KEEP_EVENTS: Duration = Duration::from_secs(60);
/// Commands left behind (their sender gone) are deleted after this long.
const KEEP_COMMANDS: Duration = Duration::from_secs(600);
/// How often old events and commands are deleted (by one node).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Connections recorded per statement.
const CONNECT_BATCH: usize = 500;

/// A connection to record, and where its epoch goes.
struct ConnectRequest {
    info: ConnectionInfo,
    reply: oneshot::Sender<Option<Recorded>>,
}

/// A recorded connection: its epoch and the node that held the charger before.
struct Recorded {
    epoch: i64,
    prev_node: Option<String>,
    prev_alive: bool,
}

/// Where a charger is connected, as the other nodes see it.
#[derive(Debug, Clone)]
pub struct Located {
    pub node_id: String,
    pub epoch: i64,
    pub info: ConnectionInfo,
}

enum Slot {
    Waiting(oneshot::Sender<()>),
    /// The answer's notice came before its sender started waiting.
    Arrived,
}

pub struct PgCluster {
    node_id: String,
    channel: String,
    pool: PgPool,
    node_timeout: Duration,
    call_timeout: Duration,
    /// Commands this node sent elsewhere, by id, waiting for their answers.
    answers: Mutex<HashMap<i64, Slot>>,
    /// Connections here waiting for another node to let go of a charger.
    releases: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    /// Rounds of once-per-cluster work this node did, by lease name.
    rounds: Mutex<HashMap<String, u64>>,
    tasks: Mutex<Vec<AbortHandle>>,
    commands_routed: AtomicU64,
    /// Ended connections (charger, epoch) to record, in batches.
    disconnects: mpsc::UnboundedSender<(String, i64)>,
    disconnected: Mutex<Option<mpsc::UnboundedReceiver<(String, i64)>>>,
    /// Accepted connections to record, in batches.
    connects: mpsc::UnboundedSender<ConnectRequest>,
    connected: Mutex<Option<mpsc::UnboundedReceiver<ConnectRequest>>>,
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl PgCluster {
    /// Joins the cluster on the database at `url`: a pool of its own and a
    /// node row with a fresh heartbeat. The store has migrated already.
    pub async fn join(url: &str, node_timeout: Duration, call_timeout: Duration) -> Result<Self> {
        use sqlx::postgres::PgConnectOptions;
        use std::str::FromStr;
        let options = PgConnectOptions::from_str(url).context("bad PostgreSQL URL")?;
        let pool = PgPoolOptions::new()
            // The listener, the heartbeat, and commands and presence
            // changes in flight.
            .max_connections(16)
            // Long enough for a reconnect storm's presence writes to queue
            // for a connection rather than fail.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL for the cluster")?;
        let node_id = uuid::Uuid::new_v4().simple().to_string();
        let (disconnects, disconnected) = mpsc::unbounded_channel();
        let (connects, connected) = mpsc::unbounded_channel();
        sqlx::query("INSERT INTO cluster_nodes (node_id) VALUES ($1)")
            .bind(&node_id)
            .execute(&pool)
            .await
            .context("registering this node")?;
        tracing::info!(node = %node_id, "joined the cluster");
        Ok(PgCluster {
            channel: format!("csms_node_{node_id}"),
            node_id,
            pool,
            node_timeout,
            call_timeout,
            answers: Default::default(),
            releases: Default::default(),
            rounds: Default::default(),
            tasks: Default::default(),
            commands_routed: AtomicU64::new(0),
            disconnects,
            disconnected: Mutex::new(Some(disconnected)),
            connects,
            connected: Mutex::new(Some(connected)),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How many rounds of the once-per-cluster work `name` this node did.
    pub fn rounds(&self, name: &str) -> u64 {
        self.rounds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Commands this node sent through other nodes.
    pub fn commands_routed(&self) -> u64 {
        self.commands_routed.load(Ordering::Relaxed)
    }

    /// Starts the node's background work: listening, heartbeat, event
    /// forwarding, pruning.
    pub fn start(self: &Arc<Self>, registry: Registry, events: Events) {
        let (forward, forwarded) = mpsc::channel(crate::engine::events::CAPACITY);
        let elsewhere = Arc::new(Elsewhere {
            forward,
            listeners: Default::default(),
            subscribed: Notify::new(),
        });
        events.join_cluster(elsewhere.clone());
        let (fetch, to_fetch) = mpsc::unbounded_channel();
        let handles = [
            tokio::spawn(self.clone().listen(registry, fetch, elsewhere.clone())),
            tokio::spawn(self.clone().heartbeat(events.clone(), elsewhere.clone())),
            tokio::spawn(self.clone().forward_events(forwarded)),
            tokio::spawn(self.clone().fetch_events(to_fetch, events)),
            tokio::spawn(self.clone().prune()),
            tokio::spawn(
                self.clone().record_connects(
                    self.connected
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .expect("a node starts once"),
                ),
            ),
            tokio::spawn(
                self.clone().record_disconnects(
                    self.disconnected
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .expect("a node starts once"),
                ),
            ),
        ];
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(handles.iter().map(|h| h.abort_handle()));
    }

    /// Leaves the cluster at a graceful stop: the node's row, its leases and
    /// its presence go at once, so the others take over without waiting for
    /// its heartbeat to go stale.
    pub async fn leave(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        let result = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM cluster_leases WHERE node_id = $1")
                .bind(&self.node_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE charger_presence SET node_id = NULL WHERE node_id = $1")
                .bind(&self.node_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1")
                .bind(&self.node_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("could not leave the cluster cleanly: {e}");
        }
        self.pool.close().await;
    }

    /// Whether this node holds the lease `name` on work done every `every`
    /// (taking it when it is free or expired, renewing it when held). It
    /// expires unless renewed: after the node timeout, or three rounds if
    /// that is longer, so the holder keeps it from round to round.
    pub async fn lease(&self, name: &str, every: Duration) -> bool {
        let ttl = self.node_timeout.max(every * 3);
        let held = sqlx::query(
            "INSERT INTO cluster_leases (name, node_id, expires_at) \
             VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond') \
             ON CONFLICT (name) DO UPDATE SET node_id = EXCLUDED.node_id, expires_at = EXCLUDED.expires_at \
             WHERE cluster_leases.node_id = EXCLUDED.node_id OR cluster_leases.expires_at < now() \
             RETURNING node_id",
        )
        .bind(name)
        .bind(&self.node_id)
        .bind(millis(ttl))
        .fetch_optional(&self.pool)
        .await;
        match held {
            Ok(Some(_)) => {
                *self
                    .rounds
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(name.to_owned())
                    .or_default() += 1;
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(lease = name, "lease not taken: {e}");
                false
            }
        }
    }

    /// Records that this node accepted `info.charger_id`: a new epoch, in
    /// the statement that records the node, announced to every node. If
    /// another live node held the charger, waits (at most the node timeout)
    /// until it has let go, so its message in hand is finished before this
    /// connection reads one. Returns the epoch (0 if it could not be
    /// recorded: the connection then serves unfenced, as a single node).
    ///
    /// Connections accepted together (a reconnect storm) are recorded
    /// together, up to [`CONNECT_BATCH`] per statement.
    pub async fn record_connect(&self, info: &ConnectionInfo) -> i64 {
        let charger_id = &info.charger_id;
        let (released_tx, released) = oneshot::channel();
        self.releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(charger_id.clone())
            .or_default()
            .push(released_tx);
        let (reply, recorded) = oneshot::channel();
        let _ = self.connects.send(ConnectRequest {
            info: info.clone(),
            reply,
        });
        let epoch = match recorded.await {
            Ok(Some(Recorded {
                epoch,
                prev_node,
                prev_alive,
            })) => {
                if prev_alive && prev_node.as_deref().is_some_and(|p| p != self.node_id) {
                    tracing::info!(charger = %charger_id, from = ?prev_node, "taking the charger over from another node");
                    if tokio::time::timeout(self.node_timeout, released)
                        .await
                        .is_err()
                    {
                        tracing::warn!(charger = %charger_id, "the old node did not let go in time; serving anyway");
                    }
                } else {
                    drop(released);
                }
                epoch
            }
            _ => 0,
        };
        self.forget_release_waiters(charger_id);
        epoch
    }

    /// Writes queued connections: one statement per batch, each charger at
    /// most once in it (a second connection of the same charger waits for
    /// the next).
    async fn record_connects(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<ConnectRequest>) {
        let mut carried: std::collections::VecDeque<ConnectRequest> = Default::default();
        loop {
            if carried.is_empty() {
                match queue.recv().await {
                    Some(r) => carried.push_back(r),
                    None => return,
                }
            }
            while let Ok(r) = queue.try_recv() {
                carried.push_back(r);
            }
            let mut batch: Vec<ConnectRequest> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let mut later = std::collections::VecDeque::new();
            while let Some(r) = carried.pop_front() {
                if batch.len() >= CONNECT_BATCH {
                    later.push_back(r);
                } else if seen.insert(r.info.charger_id.clone()) {
                    batch.push(r);
                } else {
                    later.push_back(r);
                }
            }
            carried = later;
            let ids: Vec<&str> = batch.iter().map(|r| r.info.charger_id.as_str()).collect();
            let at: Vec<DateTime<Utc>> = batch.iter().map(|r| r.info.connected_at).collect();
            let addrs: Vec<Option<String>> = batch
                .iter()
                .map(|r| r.info.remote_addr.map(|a| a.to_string()))
                .collect();
            let protocols: Vec<Option<String>> =
                batch.iter().map(|r| r.info.subprotocol.clone()).collect();
            let rows = sqlx::query(
                "WITH input AS (SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[]) \
                                AS i(charger_id, connected_at, remote_addr, subprotocol)), \
                 prev AS (SELECT p.charger_id, p.node_id FROM charger_presence p JOIN input USING (charger_id)), \
                 up AS (INSERT INTO charger_presence (charger_id, node_id, epoch, connected_at, remote_addr, subprotocol) \
                        SELECT charger_id, $5::text, 1, connected_at, remote_addr, subprotocol FROM input \
                        ON CONFLICT (charger_id) DO UPDATE SET node_id = EXCLUDED.node_id, \
                            epoch = charger_presence.epoch + 1, connected_at = EXCLUDED.connected_at, \
                            remote_addr = EXCLUDED.remote_addr, subprotocol = EXCLUDED.subprotocol \
                        RETURNING charger_id, epoch) \
                 SELECT up.charger_id, up.epoch, prev.node_id AS prev_node, \
                        EXISTS (SELECT 1 FROM cluster_nodes n WHERE n.node_id = prev.node_id \
                                AND n.heartbeat_at > now() - $6::bigint * interval '1 millisecond') AS prev_alive, \
                        pg_notify('csms_cluster', 'p ' || up.epoch || E'\\t' || $5::text || E'\\t' || up.charger_id) \
                 FROM up LEFT JOIN prev ON prev.charger_id = up.charger_id",
            )
            .bind(&ids)
            .bind(&at)
            .bind(&addrs)
            .bind(&protocols)
            .bind(&self.node_id)
            .bind(millis(self.node_timeout))
            .fetch_all(&self.pool)
            .await;
            match rows {
                Ok(rows) => {
                    let mut by_id: HashMap<String, Recorded> = rows
                        .iter()
                        .map(|row| {
                            (
                                row.get::<String, _>("charger_id"),
                                Recorded {
                                    epoch: row.get("epoch"),
                                    prev_node: row.get("prev_node"),
                                    prev_alive: row.get("prev_alive"),
                                },
                            )
                        })
                        .collect();
                    for r in batch {
                        let _ = r.reply.send(by_id.remove(&r.info.charger_id));
                    }
                }
                Err(e) => {
                    tracing::warn!(chargers = batch.len(), "presence not recorded: {e}");
                    for r in batch {
                        let _ = r.reply.send(None);
                    }
                }
            }
        }
    }

    fn forget_release_waiters(&self, charger_id: &str) {
        let mut releases = self.releases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiters) = releases.get_mut(charger_id) {
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                releases.remove(charger_id);
            }
        }
    }

    /// Records that a connection ended (if it is still the charger's latest)
    /// and tells a node taking the charger over that this one let go. Queued:
    /// a thousand chargers dropping at once become a few statements, and a
    /// failed one is tried again rather than leaving a charger shown
    /// connected.
    pub fn record_disconnect(&self, charger_id: &str, epoch: i64) {
        let _ = self.disconnects.send((charger_id.to_owned(), epoch));
    }

    /// Writes queued disconnects, as many per statement as one release
    /// notice can name (its payload stays under PostgreSQL's 8,000 bytes).
    async fn record_disconnects(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<(String, i64)>,
    ) {
        let mut carried: Option<(String, i64)> = None;
        loop {
            let first = match carried.take() {
                Some(d) => d,
                None => match queue.recv().await {
                    Some(d) => d,
                    None => return,
                },
            };
            let mut bytes = first.0.len() + 1;
            let (mut ids, mut epochs) = (vec![first.0], vec![first.1]);
            while let Ok(next) = queue.try_recv() {
                if bytes + next.0.len() + 1 > 7_000 {
                    carried = Some(next);
                    break;
                }
                bytes += next.0.len() + 1;
                ids.push(next.0);
                epochs.push(next.1);
            }
            loop {
                let written = sqlx::query(
                    "WITH gone AS (UPDATE charger_presence p SET node_id = NULL \
                                   FROM UNNEST($1::text[], $2::bigint[]) AS g(charger_id, epoch) \
                                   WHERE p.charger_id = g.charger_id AND p.epoch = g.epoch AND p.node_id = $3 \
                                   RETURNING 1) \
                     SELECT pg_notify('csms_cluster', 'r ' || array_to_string($1::text[], E'\\t'))",
                )
                .bind(&ids)
                .bind(&epochs)
                .bind(&self.node_id)
                .execute(&self.pool)
                .await;
                match written {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(
                            chargers = ids.len(),
                            "disconnects not recorded yet, retrying: {e}"
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Where `charger_id` is connected: on a node whose heartbeat is fresh.
    pub async fn locate(&self, charger_id: &str) -> Result<Option<Located>> {
        let row = sqlx::query(
            "SELECT p.node_id, p.epoch, p.connected_at, p.remote_addr, p.subprotocol \
             FROM charger_presence p JOIN cluster_nodes n ON n.node_id = p.node_id \
             WHERE p.charger_id = $1 AND n.heartbeat_at > now() - $2::bigint * interval '1 millisecond'",
        )
        .bind(charger_id)
        .bind(millis(self.node_timeout))
        .fetch_optional(&self.pool)
        .await
        .context("reading where the charger is connected")?;
        Ok(row.map(|row| {
            let remote: Option<String> = row.get("remote_addr");
            let connected_at: Option<DateTime<Utc>> = row.get("connected_at");
            Located {
                node_id: row.get("node_id"),
                epoch: row.get("epoch"),
                info: ConnectionInfo {
                    charger_id: charger_id.to_owned(),
                    remote_addr: remote.and_then(|r| r.parse().ok()),
                    subprotocol: row.get("subprotocol"),
                    connected_at: connected_at.unwrap_or_else(Utc::now),
                },
            }
        }))
    }

    /// Sends a command through the node holding the charger and returns
    /// its answer, with the errors a local command has: `Offline` only when
    /// no node holds it.
    pub async fn route(
        &self,
        charger_id: &str,
        action: &str,
        payload: Value,
    ) -> Result<Value, CommandError> {
        let payload = payload.to_string();
        let mut tried: Option<(String, i64)> = None;
        loop {
            let located = self.locate(charger_id).await.map_err(|e| {
                tracing::warn!(charger = %charger_id, "command not routed: {e:#}");
                CommandError::ConnectionLost
            })?;
            let Some(located) = located else {
                return Err(CommandError::Offline);
            };
            if located.node_id == self.node_id {
                // This node's own registry had no such connection.
                return Err(CommandError::Offline);
            }
            let here = (located.node_id.clone(), located.epoch);
            if tried.as_ref() == Some(&here) {
                // Answered `Offline` by the node that still holds it.
                return Err(CommandError::Offline);
            }
            let result = self.route_to(charger_id, &located, action, &payload).await;
            match result {
                // The charger moved meanwhile: try where it is now.
                Err(CommandError::Offline) => tried = Some(here),
                other => return other,
            }
        }
    }

    async fn route_to(
        &self,
        charger_id: &str,
        to: &Located,
        action: &str,
        payload: &str,
    ) -> Result<Value, CommandError> {
        let lost = |e: sqlx::Error| {
            tracing::warn!(charger = %charger_id, "routed command failed: {e}");
            CommandError::ConnectionLost
        };
        let id: i64 = sqlx::query_scalar(
            "WITH c AS (INSERT INTO cluster_commands (charger_id, target_node, epoch, origin_node, action, payload) \
                        VALUES ($1, $2, $3, $4, $5, $6) RETURNING id) \
             SELECT id FROM c, LATERAL (SELECT pg_notify('csms_node_' || $2, 'c ' || c.id)) AS n",
        )
        .bind(charger_id)
        .bind(&to.node_id)
        .bind(to.epoch)
        .bind(&self.node_id)
        .bind(action)
        .bind(payload)
        .fetch_one(&self.pool)
        .await
        .map_err(lost)?;
        self.commands_routed.fetch_add(1, Ordering::Relaxed);
        let mut answered = self.await_answer(id);
        // The holding node applies the call timeout itself and answers
        // `Timeout`; the margin lets that answer arrive.
        let deadline = Instant::now() + self.call_timeout + Duration::from_secs(5);
        let outcome = loop {
            let wake = deadline.min(Instant::now() + self.node_timeout);
            let notified = match &mut answered {
                Some(rx) => tokio::time::timeout_at(wake, rx).await.is_ok(),
                None => true,
            };
            if notified {
                answered = None;
            }
            // Notified, or a notice may have been lost: look at the row.
            match self.take_answer(id).await {
                Ok(Some(outcome)) => break Ok(outcome),
                Ok(None) => {}
                Err(e) => break Err(lost(e)),
            }
            if Instant::now() >= deadline {
                break Err(CommandError::Timeout);
            }
            if !self.node_alive(&to.node_id).await {
                break Err(CommandError::ConnectionLost);
            }
            if answered.is_none() {
                answered = self.await_answer(id);
            }
        };
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if outcome.is_err() {
            let _ = sqlx::query("DELETE FROM cluster_commands WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await;
        }
        let (outcome, answer) = outcome?;
        decode(&outcome, answer.as_deref().unwrap_or("null"))
    }

    /// A receiver for the answer notice of command `id`; `None` if it came
    /// already.
    fn await_answer(&self, id: i64) -> Option<oneshot::Receiver<()>> {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        match answers.remove(&id) {
            Some(Slot::Arrived) => None,
            _ => {
                let (tx, rx) = oneshot::channel();
                answers.insert(id, Slot::Waiting(tx));
                Some(rx)
            }
        }
    }

    /// The answer of command `id`, taken (the row is deleted) once there is one.
    async fn take_answer(&self, id: i64) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
        let row = sqlx::query(
            "DELETE FROM cluster_commands WHERE id = $1 AND outcome IS NOT NULL RETURNING outcome, answer",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get("outcome"), r.get("answer"))))
    }

    async fn node_alive(&self, node_id: &str) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM cluster_nodes WHERE node_id = $1 \
             AND heartbeat_at > now() - $2::bigint * interval '1 millisecond')",
        )
        .bind(node_id)
        .bind(millis(self.node_timeout))
        .fetch_one(&self.pool)
        .await
        // A database that cannot say is no reason to give up on the command.
        .unwrap_or(true)
    }

    /// Sends command `id` (addressed to this node) to its charger and writes
    /// the answer back for the node that asked.
    async fn execute(self: Arc<Self>, registry: Registry, id: i64) {
        let claimed = sqlx::query(
            "UPDATE cluster_commands SET claimed_at = now() \
             WHERE id = $1 AND target_node = $2 AND claimed_at IS NULL \
             RETURNING charger_id, epoch, action, payload",
        )
        .bind(id)
        .bind(&self.node_id)
        .fetch_optional(&self.pool)
        .await;
        let row = match claimed {
            Ok(Some(row)) => row,
            Ok(None) => return, // claimed already, or given up by its sender
            Err(e) => {
                tracing::warn!(command = id, "routed command not claimed: {e}");
                return;
            }
        };
        let charger_id: String = row.get("charger_id");
        let action: String = row.get("action");
        let payload: String = row.get("payload");
        let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        let result = registry
            .call_here(&charger_id, row.get("epoch"), &action, payload)
            .await;
        let (outcome, answer) = encode(&result);
        let written = sqlx::query(
            "WITH u AS (UPDATE cluster_commands SET outcome = $2, answer = $3 WHERE id = $1 RETURNING origin_node) \
             SELECT pg_notify('csms_node_' || origin_node, 'a ' || $1::bigint) FROM u",
        )
        .bind(id)
        .bind(outcome)
        .bind(answer)
        .execute(&self.pool)
        .await;
        if let Err(e) = written {
            tracing::warn!(command = id, charger = %charger_id, "answer of a routed command not written: {e}");
        }
    }

    /// Listens on both channels for the life of the node; after each
    /// (re)connect looks up what it may have missed.
    async fn listen(
        self: Arc<Self>,
        registry: Registry,
        fetch: mpsc::UnboundedSender<Vec<i64>>,
        elsewhere: Arc<Elsewhere>,
    ) {
        loop {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("cluster listener cannot connect: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener
                .listen_all([CLUSTER_CHANNEL, self.channel.as_str()])
                .await
            {
                tracing::warn!("cluster listener cannot listen: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            self.catch_up(&registry, &elsewhere).await;
            loop {
                match listener.try_recv().await {
                    Ok(Some(notice)) => self.on_notice(
                        notice.channel(),
                        notice.payload(),
                        &registry,
                        &fetch,
                        &elsewhere,
                    ),
                    Ok(None) => {
                        tracing::warn!("cluster listener lost its connection; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("cluster listener failed: {e}; reconnecting");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        }
    }

    fn on_notice(
        self: &Arc<Self>,
        channel: &str,
        payload: &str,
        registry: &Registry,
        fetch: &mpsc::UnboundedSender<Vec<i64>>,
        elsewhere: &Arc<Elsewhere>,
    ) {
        let (kind, rest) = payload.split_once(' ').unwrap_or((payload, ""));
        if channel == self.channel {
            let Ok(id) = rest.parse::<i64>() else { return };
            match kind {
                "c" => {
                    tokio::spawn(self.clone().execute(registry.clone(), id));
                }
                "a" => {
                    let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
                    match answers.remove(&id) {
                        Some(Slot::Waiting(tx)) => {
                            let _ = tx.send(());
                        }
                        _ => {
                            answers.insert(id, Slot::Arrived);
                        }
                    }
                }
                _ => {}
            }
            return;
        }
        match kind {
            "p" => {
                let mut parts = rest.splitn(3, '\t');
                let (Some(epoch), Some(node), Some(charger)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return;
                };
                if node != self.node_id {
                    if let Ok(epoch) = epoch.parse() {
                        registry.fence(charger, epoch);
                    }
                }
            }
            "r" => {
                let mut releases = self.releases.lock().unwrap_or_else(|e| e.into_inner());
                for charger in rest.split('\t') {
                    for w in releases.remove(charger).into_iter().flatten() {
                        let _ = w.send(());
                    }
                }
            }
            "e" => {
                let Some((origin, ids)) = rest.split_once(' ') else {
                    return;
                };
                if origin != self.node_id {
                    let ids: Vec<i64> = ids.split(',').filter_map(|i| i.parse().ok()).collect();
                    let _ = fetch.send(ids);
                }
            }
            "l" => {
                tokio::spawn(self.clone().count_listeners_elsewhere(elsewhere.clone()));
            }
            _ => {}
        }
    }

    /// What a notice lost while not listening would have said: commands
    /// addressed here, chargers taken over, listeners elsewhere.
    async fn catch_up(self: &Arc<Self>, registry: &Registry, elsewhere: &Arc<Elsewhere>) {
        let pending: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM cluster_commands WHERE target_node = $1 AND claimed_at IS NULL ORDER BY id",
        )
        .bind(&self.node_id)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        for id in pending {
            tokio::spawn(self.clone().execute(registry.clone(), id));
        }
        let local = registry.local_epochs();
        if !local.is_empty() {
            let ids: Vec<String> = local.iter().map(|(id, _)| id.clone()).collect();
            let rows = sqlx::query(
                "SELECT charger_id, epoch, node_id FROM charger_presence WHERE charger_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
            for row in rows {
                let node: Option<String> = row.get("node_id");
                if node.as_deref() != Some(self.node_id.as_str()) {
                    registry.fence(row.get("charger_id"), row.get("epoch"));
                }
            }
        }
        self.clone()
            .count_listeners_elsewhere(elsewhere.clone())
            .await;
    }

    async fn count_listeners_elsewhere(self: Arc<Self>, elsewhere: Arc<Elsewhere>) {
        let others: Result<i64, _> = sqlx::query_scalar(
            "SELECT coalesce(sum(listeners), 0)::bigint FROM cluster_nodes \
             WHERE node_id <> $1 AND heartbeat_at > now() - $2::bigint * interval '1 millisecond'",
        )
        .bind(&self.node_id)
        .bind(millis(self.node_timeout))
        .fetch_one(&self.pool)
        .await;
        if let Ok(n) = others {
            elsewhere
                .listeners
                .store(n.max(0) as usize, Ordering::Relaxed);
        }
    }

    /// Renews the node's heartbeat (a fifth of the node timeout apart) with
    /// its listener count, and reads the other nodes' counts. A listener
    /// subscribing here is announced at once.
    async fn heartbeat(self: Arc<Self>, events: Events, elsewhere: Arc<Elsewhere>) {
        let every = (self.node_timeout / 5).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told: i64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = elsewhere.subscribed.notified() => {}
            }
            let listeners = events.local_listeners() as i64;
            let beat = sqlx::query(
                "INSERT INTO cluster_nodes (node_id, listeners) VALUES ($1, $2) \
                 ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now(), listeners = EXCLUDED.listeners",
            )
            .bind(&self.node_id)
            .bind(listeners)
            .execute(&self.pool)
            .await;
            if let Err(e) = beat {
                tracing::warn!("heartbeat not written: {e}");
                continue;
            }
            if (listeners > 0) != (told > 0) {
                let _ = sqlx::query("SELECT pg_notify('csms_cluster', 'l')")
                    .execute(&self.pool)
                    .await;
            }
            told = listeners;
            self.clone()
                .count_listeners_elsewhere(elsewhere.clone())
                .await;
        }
    }

    /// Writes this node's events for the others, in order, a batch per
    /// statement, and announces their ids.
    async fn forward_events(self: Arc<Self>, mut events: mpsc::Receiver<Arc<Event>>) {
        while let Some(first) = events.recv().await {
            let mut batch = vec![first];
            while batch.len() < EVENT_BATCH {
                match events.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let names: Vec<&str> = batch.iter().map(|e| e.name).collect();
            let users: Vec<Option<String>> = batch.iter().map(|e| e.user_id.clone()).collect();
            let data: Vec<String> = batch.iter().map(|e| e.data.to_string()).collect();
            let at: Vec<DateTime<Utc>> = batch.iter().map(|e| e.at).collect();
            let written = sqlx::query(
                "WITH ins AS (INSERT INTO cluster_events (origin_node, name, user_id, data, at) \
                              SELECT $1::text, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
                              RETURNING id) \
                 SELECT pg_notify('csms_cluster', 'e ' || $1::text || ' ' || string_agg(id::text, ',' ORDER BY id)) FROM ins",
            )
            .bind(&self.node_id)
            .bind(&names)
            .bind(&users)
            .bind(&data)
            .bind(&at)
            .execute(&self.pool)
            .await;
            if let Err(e) = written {
                tracing::warn!(
                    events = batch.len(),
                    "events not forwarded to the other nodes: {e}"
                );
            }
        }
    }

    /// Reads the events other nodes announced and hands them to this
    /// node's listeners.
    async fn fetch_events(
        self: Arc<Self>,
        mut ids: mpsc::UnboundedReceiver<Vec<i64>>,
        events: Events,
    ) {
        while let Some(batch) = ids.recv().await {
            if events.local_listeners() == 0 {
                continue;
            }
            let rows = sqlx::query(
                "SELECT name, user_id, data, at FROM cluster_events WHERE id = ANY($1) ORDER BY id",
            )
            .bind(&batch)
            .fetch_all(&self.pool)
            .await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!("events of other nodes not read: {e}");
                    continue;
                }
            };
            for row in rows {
                let name: String = row.get("name");
                let Some(name) = NAMES.iter().find(|n| **n == name) else {
                    continue;
                };
                let data: String = row.get("data");
                events.deliver_from_elsewhere(Event {
                    name,
                    user_id: row.get("user_id"),
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                    at: row.get("at"),
                });
            }
        }
    }

    /// Deletes read events and abandoned commands, on one node at a time.
    async fn prune(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            if !self.lease("cluster-prune", PRUNE_EVERY).await {
                continue;
            }
            let result = async {
                sqlx::query(
                    "DELETE FROM cluster_events WHERE created_at < now() - $1::bigint * interval '1 millisecond'",
                )
                .bind(millis(KEEP_EVENTS))
                .execute(&self.pool)
                .await?;
                sqlx::query(
                    "DELETE FROM cluster_commands WHERE created_at < now() - $1::bigint * interval '1 millisecond'",
                )
                .bind(millis(KEEP_COMMANDS))
                .execute(&self.pool)
                .await?;
                // Nodes gone for a day (killed, never left) are forgotten.
                sqlx::query("DELETE FROM cluster_nodes WHERE heartbeat_at < now() - interval '1 day'")
                    .execute(&self.pool)
                    .await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!("cluster pruning failed: {e}");
            }
        }
    }
}

/// A command's result as the `outcome` and `answer` columns keep it.
fn encode(result: &Result<Value, CommandError>) -> (&'static str, String) {
    match result {
        Ok(v) => ("ok", v.to_string()),
        Err(CommandError::Offline) => ("Offline", String::new()),
        Err(CommandError::Busy) => ("Busy", String::new()),
        Err(CommandError::Timeout) => ("Timeout", String::new()),
        Err(CommandError::ConnectionLost) => ("ConnectionLost", String::new()),
        Err(CommandError::Rejected {
            code,
            description,
            details,
        }) => (
            "Rejected",
            json!({"code": code, "description": description, "details": details}).to_string(),
        ),
        Err(CommandError::InvalidResponse(why)) => ("InvalidResponse", why.clone()),
        // Checked before a command leaves its first node; never sent on.
        Err(e) => ("InvalidResponse", e.to_string()),
    }
}

fn decode(outcome: &str, answer: &str) -> Result<Value, CommandError> {
    match outcome {
        "ok" => serde_json::from_str(answer)
            .map_err(|e| CommandError::InvalidResponse(format!("routed answer unreadable: {e}"))),
        "Offline" => Err(CommandError::Offline),
        "Busy" => Err(CommandError::Busy),
        "Timeout" => Err(CommandError::Timeout),
        "ConnectionLost" => Err(CommandError::ConnectionLost),
        "Rejected" => {
            let v: Value = serde_json::from_str(answer).unwrap_or(Value::Null);
            Err(CommandError::Rejected {
                code: v["code"].as_str().unwrap_or("GenericError").to_owned(),
                description: v["description"].as_str().unwrap_or("").to_owned(),
                details: v["details"].clone(),
            })
        }
        _ => Err(CommandError::InvalidResponse(answer.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_outcome_survives_the_trip_between_nodes() {
        let cases = vec![
            Ok(json!({"status": "Accepted"})),
            Err(CommandError::Offline),
            Err(CommandError::Busy),
            Err(CommandError::Timeout),
            Err(CommandError::ConnectionLost),
            Err(CommandError::Rejected {
                code: "NotSupported".into(),
                description: "no".into(),
                details: json!({"a": 1}),
            }),
            Err(CommandError::InvalidResponse("bad".into())),
        ];
        for case in cases {
            let (outcome, answer) = encode(&case);
            let back = decode(outcome, if answer.is_empty() { "null" } else { &answer });
            assert_eq!(format!("{case:?}"), format!("{back:?}"));
        }
    }
}
