//! The registry of live charger connections: who is connected, and the only
//! way for the rest of the server to send a charger a command.

use super::commands::CommandError;
use crate::cluster::Cluster;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, Notify, OwnedMutexGuard};

/// A command on its way to a charger: the connection task sends it when no
/// other CALL of the server is outstanding, and answers `reply`.
pub struct Outgoing {
    pub action: String,
    pub payload: Value,
    pub reply: oneshot::Sender<Result<Value, CommandError>>,
}

/// How many commands may wait behind the outstanding one before callers are
/// told the charger is busy.
const COMMAND_QUEUE: usize = 32;

/// Commands travel boxed: the channel allocates its slots up front, and a
/// pointer per slot instead of a whole command keeps an idle charger's queue
/// at a few hundred bytes (it matters at tens of thousands of chargers).
pub type Command = Box<Outgoing>;

struct Live {
    connection_id: u64,
    commands: mpsc::Sender<Command>,
    /// Wakes the connection task when a newer connection replaces it.
    replaced: Arc<Notify>,
    /// The connection's fencing epoch (0 until recorded, see [`Registry::attach`]).
    epoch: i64,
    /// Set when another node accepted a newer connection of this charger.
    fenced: Arc<AtomicBool>,
    info: ConnectionInfo,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub charger_id: String,
    pub remote_addr: Option<SocketAddr>,
    pub subprotocol: Option<String>,
    pub connected_at: DateTime<Utc>,
}

type Turn = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
struct Inner {
    live: HashMap<String, Live>,
    /// One lock per charger identity, held by its connection task for its
    /// whole life: a replacing connection waits for the old task to finish
    /// the message in hand before it reads its first, so no message is lost
    /// or answered twice and a charger's messages stay in order. An entry
    /// lives only while a connection holds or waits for it (see
    /// [`Registry::release_turn`]), so the map does not grow with every
    /// identity ever seen.
    turns: HashMap<String, Turn>,
}

/// Cheap to clone; shared by the HTTP handlers and every connection task.
#[derive(Clone, Default)]
pub struct Registry {
    // A std Mutex, not tokio's: it is never held across an await, and the
    // critical sections are a few map operations.
    inner: Arc<Mutex<Inner>>,
    next_id: Arc<AtomicU64>,
    /// The other nodes, when there are any: chargers held by one of them are
    /// reached through it.
    cluster: Cluster,
}

/// What a connection task holds while it serves: its commands, the signal
/// that it has been replaced, and its turn. Dropping it deregisters the
/// connection (unless a newer one has taken its place).
pub struct Attachment {
    registry: Registry,
    pub charger_id: String,
    pub connection_id: u64,
    pub commands: mpsc::Receiver<Command>,
    pub replaced: Arc<Notify>,
    /// The fencing epoch this connection was accepted with: on a single node
    /// its connection id; with several, the one recorded with its presence.
    pub epoch: i64,
    /// Set once another node accepted a newer connection of this charger:
    /// the connection then handles and answers nothing more.
    pub fenced: Arc<AtomicBool>,
    /// Always `Some` until dropped.
    turn: Option<OwnedMutexGuard<()>>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if inner
            .live
            .get(&self.charger_id)
            .is_some_and(|l| l.connection_id == self.connection_id)
        {
            inner.live.remove(&self.charger_id);
        }
        Registry::release_turn(&mut inner, &self.charger_id, self.turn.take());
    }
}

/// A connection waiting for its identity's turn. Dropped when the wait is
/// over, or when the waiting connection gives up (its task is cancelled),
/// so the turn is forgotten either way once nobody needs it.
struct WaitingTurn {
    registry: Registry,
    charger_id: String,
    turn: Option<Turn>,
    /// Set while waiting: a connection that gives up is no longer the live
    /// one either. Cleared once it has its turn.
    gives_up: Option<u64>,
}

impl Drop for WaitingTurn {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(connection_id) = self.gives_up {
            if inner
                .live
                .get(&self.charger_id)
                .is_some_and(|l| l.connection_id == connection_id)
            {
                inner.live.remove(&self.charger_id);
            }
        }
        Registry::release_turn(&mut inner, &self.charger_id, self.turn.take());
    }
}

impl Attachment {
    /// Whether another node took this charger over.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }
}

impl Registry {
    /// A registry on one node of `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        Registry {
            cluster,
            ..Default::default()
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets go of `held` (a turn's lock or a handle on it) under the
    /// registry's lock, and forgets the identity's turn if nobody else holds
    /// or waits for it: then the map's own handle is the only one left.
    /// Every handle is taken under the same lock (in `attach`), so none can
    /// appear between the count and the removal.
    fn release_turn<T>(inner: &mut Inner, charger_id: &str, held: Option<T>) {
        drop(held);
        if inner
            .turns
            .get(charger_id)
            .is_some_and(|turn| Arc::strong_count(turn) == 1)
        {
            inner.turns.remove(charger_id);
        }
    }

    /// Makes a new connection the live one for `info.charger_id`, telling
    /// any older connection of the same identity to close, and waits until
    /// that one has let go.
    pub async fn attach(&self, info: ConnectionInfo) -> Attachment {
        let connection_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let replaced = Arc::new(Notify::new());
        let fenced = Arc::new(AtomicBool::new(false));
        let charger_id = info.charger_id.clone();
        let recorded = matches!(self.cluster, Cluster::Postgres(_)).then(|| info.clone());
        let waiting = {
            let mut inner = self.lock();
            let old = inner.live.insert(
                charger_id.clone(),
                Live {
                    connection_id,
                    commands: commands_tx,
                    replaced: replaced.clone(),
                    epoch: 0,
                    fenced: fenced.clone(),
                    info,
                },
            );
            if let Some(old) = old {
                tracing::info!(charger = %charger_id, "new connection replaces the old one");
                // notify_one stores a permit, so the old task sees it even if
                // it is busy with a message right now.
                old.replaced.notify_one();
            }
            WaitingTurn {
                registry: self.clone(),
                charger_id: charger_id.clone(),
                turn: Some(inner.turns.entry(charger_id.clone()).or_default().clone()),
                gives_up: Some(connection_id),
            }
        };
        let mut waiting = waiting;
        let held = waiting.turn.clone().expect("set above").lock_owned().await;
        // The guard holds the turn now; the waiter's handle goes.
        waiting.gives_up = None;
        drop(waiting);
        // With several nodes the connection is recorded with a new epoch,
        // and a node that held the charger before is waited for, as the
        // turn waits for an older connection here.
        let epoch = match (&self.cluster, recorded) {
            (Cluster::Postgres(cluster), Some(info)) => cluster.record_connect(&info).await,
            // 0 means "not recorded": epochs here start at 1.
            _ => connection_id as i64 + 1,
        };
        if let Some(live) = self
            .lock()
            .live
            .get_mut(&charger_id)
            .filter(|l| l.connection_id == connection_id)
        {
            live.epoch = epoch;
        }
        Attachment {
            registry: self.clone(),
            charger_id,
            connection_id,
            commands,
            replaced,
            epoch,
            fenced,
            turn: Some(held),
        }
    }

    /// Records with the other nodes that a connection ended (nothing to do
    /// on a single node).
    pub async fn detach(&self, attachment: &Attachment) {
        if let Cluster::Postgres(cluster) = &self.cluster {
            cluster.record_disconnect(&attachment.charger_id, attachment.epoch);
        }
    }

    /// Another node accepted `charger_id` with `epoch`: a connection here
    /// with an older one stops handling it and closes.
    pub fn fence(&self, charger_id: &str, epoch: i64) {
        let inner = self.lock();
        if let Some(live) = inner
            .live
            .get(charger_id)
            .filter(|l| l.epoch != 0 && l.epoch < epoch)
        {
            tracing::info!(charger = %charger_id, old = live.epoch, new = epoch, "charger taken over by another node");
            live.fenced.store(true, Ordering::Release);
            live.replaced.notify_one();
        }
    }

    /// (charger, epoch) of every live connection here with a recorded epoch.
    pub fn local_epochs(&self) -> Vec<(String, i64)> {
        self.lock()
            .live
            .iter()
            .filter(|(_, l)| l.epoch != 0)
            .map(|(id, l)| (id.clone(), l.epoch))
            .collect()
    }

    /// The connection of `charger_id` on whichever node holds it.
    pub async fn presence(&self, charger_id: &str) -> anyhow::Result<Option<ConnectionInfo>> {
        if let Some(info) = self.connection(charger_id) {
            return Ok(Some(info));
        }
        match &self.cluster {
            Cluster::Single => Ok(None),
            // This node's own registry is the word on its own chargers (a
            // row left by a disconnect that could not be recorded says
            // nothing).
            Cluster::Postgres(cluster) => Ok(cluster
                .locate(charger_id)
                .await?
                .filter(|l| l.node_id != cluster.node_id())
                .map(|l| l.info)),
        }
    }

    /// How many identities have a turn kept: those with a connection that
    /// holds or waits for it.
    pub fn turns_kept(&self) -> usize {
        self.lock().turns.len()
    }

    /// Whether `charger_id` is connected to this node.
    pub fn is_connected(&self, charger_id: &str) -> bool {
        self.lock().live.contains_key(charger_id)
    }

    pub fn connection(&self, charger_id: &str) -> Option<ConnectionInfo> {
        self.lock().live.get(charger_id).map(|l| l.info.clone())
    }

    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut all: Vec<_> = self.lock().live.values().map(|l| l.info.clone()).collect();
        all.sort_by(|a, b| a.charger_id.cmp(&b.charger_id));
        all
    }

    pub fn count(&self) -> usize {
        self.lock().live.len()
    }

    /// Sends `action` with `payload` to a connected charger and returns its
    /// answer. The payload is checked against the OCPP 1.6 schema first, and
    /// the answer after; the connection applies the call timeout. A charger
    /// held by another node is reached through that node.
    pub async fn call(
        &self,
        charger_id: &str,
        action: &str,
        payload: Value,
    ) -> Result<Value, CommandError> {
        if !crate::ocpp::action::is_server_to_charger(action) {
            return Err(CommandError::UnknownAction(action.to_owned()));
        }
        crate::ocpp::schema::validate_request(action, &payload)
            .map_err(CommandError::InvalidRequest)?;
        // A connection taken over by another node is not asked: the
        // charger is there now.
        let sender = self
            .lock()
            .live
            .get(charger_id)
            .filter(|l| !l.fenced.load(Ordering::Acquire))
            .map(|l| l.commands.clone());
        match (sender, &self.cluster) {
            (Some(sender), _) => Self::send_local(sender, action, payload).await,
            (None, Cluster::Single) => Err(CommandError::Offline),
            (None, Cluster::Postgres(cluster)) => cluster.route(charger_id, action, payload).await,
        }
    }

    /// Sends a command another node routed here, if this node still holds
    /// `charger_id` with `epoch` (a charger that moved is `Offline` here).
    pub async fn call_here(
        &self,
        charger_id: &str,
        epoch: i64,
        action: &str,
        payload: Value,
    ) -> Result<Value, CommandError> {
        let sender = self
            .lock()
            .live
            .get(charger_id)
            .filter(|l| l.epoch == epoch && !l.fenced.load(Ordering::Acquire))
            .map(|l| l.commands.clone())
            .ok_or(CommandError::Offline)?;
        Self::send_local(sender, action, payload).await
    }

    async fn send_local(
        sender: mpsc::Sender<Command>,
        action: &str,
        payload: Value,
    ) -> Result<Value, CommandError> {
        let (reply, answer) = oneshot::channel();
        let outgoing = Box::new(Outgoing {
            action: action.to_owned(),
            payload,
            reply,
        });
        sender.try_send(outgoing).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CommandError::Busy,
            mpsc::error::TrySendError::Closed(_) => CommandError::Offline,
        })?;
        answer.await.unwrap_or(Err(CommandError::ConnectionLost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn info(id: &str) -> ConnectionInfo {
        ConnectionInfo {
            charger_id: id.to_owned(),
            remote_addr: None,
            subprotocol: Some("ocpp1.6".into()),
            connected_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn the_turns_do_not_grow_with_every_identity_ever_seen() {
        let registry = Registry::default();
        for n in 0..1_000 {
            let attachment = registry.attach(info(&format!("CP-{n}"))).await;
            assert_eq!(registry.turns_kept(), 1);
            drop(attachment);
        }
        assert_eq!(registry.turns_kept(), 0);
        assert_eq!(registry.count(), 0);
    }

    #[tokio::test]
    async fn a_replacing_connection_keeps_the_turn_until_it_too_is_gone() {
        let registry = Registry::default();
        let old = registry.attach(info("CP-1")).await;
        let waiting = tokio::spawn({
            let registry = registry.clone();
            async move { registry.attach(info("CP-1")).await }
        });
        // The new connection waits for the old one to let go.
        let replaced = old.replaced.clone();
        tokio::time::timeout(Duration::from_secs(5), replaced.notified())
            .await
            .expect("the old connection is told it was replaced");
        assert!(!waiting.is_finished());
        drop(old);
        let new = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the new connection gets its turn")
            .unwrap();
        assert_eq!(registry.turns_kept(), 1);
        assert!(registry.is_connected("CP-1"));
        drop(new);
        assert_eq!(registry.turns_kept(), 0);
        assert!(!registry.is_connected("CP-1"));
    }

    #[tokio::test]
    async fn a_connection_taken_over_elsewhere_is_fenced_and_takes_no_routed_command() {
        let registry = Registry::default();
        let attachment = registry.attach(info("CP-1")).await;
        let epoch = attachment.epoch;
        assert!(epoch > 0);
        assert_eq!(registry.local_epochs(), vec![("CP-1".to_owned(), epoch)]);
        // A command routed for another epoch is not sent here.
        let wrong = registry
            .call_here("CP-1", epoch + 7, "ClearCache", serde_json::json!({}))
            .await;
        assert!(matches!(wrong, Err(CommandError::Offline)), "{wrong:?}");
        // An older epoch announced elsewhere changes nothing.
        registry.fence("CP-1", epoch - 1);
        assert!(!attachment.is_fenced());
        // A newer one fences the connection and tells it to close.
        registry.fence("CP-1", epoch + 1);
        assert!(attachment.is_fenced());
        tokio::time::timeout(Duration::from_secs(5), attachment.replaced.notified())
            .await
            .expect("the fenced connection is told to close");
        let fenced = registry
            .call("CP-1", "ClearCache", serde_json::json!({}))
            .await;
        assert!(matches!(fenced, Err(CommandError::Offline)), "{fenced:?}");
    }

    #[tokio::test]
    async fn a_connection_that_gives_up_waiting_leaves_no_turn_behind() {
        let registry = Registry::default();
        let old = registry.attach(info("CP-1")).await;
        // Its wait is cancelled (the timeout drops the future).
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), registry.attach(info("CP-1"))).await;
        assert!(gave_up.is_err());
        assert_eq!(registry.turns_kept(), 1);
        // Nor does it stay the live connection (the old one was told to close).
        assert!(!registry.is_connected("CP-1"));
        drop(old);
        assert_eq!(registry.turns_kept(), 0);
        assert!(!registry.is_connected("CP-1"));
    }
}
