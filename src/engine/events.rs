//! Live events: what changed, told to whoever listens (the Server-Sent
//! Events streams of the API), always after the change is committed.
//!
//! One broadcast channel per server. Publishing costs nothing while nobody
//! listens (no session is read back for an event nobody receives); a
//! listener that falls behind by more than [`CAPACITY`] events is told how
//! many it missed and goes on with the newest.
//!
//! With several nodes ([`crate::cluster`]) an event is also handed to the
//! cluster while anyone on another node listens, and events of the other
//! nodes arrive through [`Events::deliver_from_elsewhere`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{broadcast, mpsc, Notify};

/// Events held for a slow listener before it misses some.
pub const CAPACITY: usize = 4096;

/// One event: its name (`session.updated`, `charger.connected`, …), the
/// user it concerns (a session's driver; `None` for operator-only events),
/// and its data as the API shows it.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub user_id: Option<String>,
    pub data: Value,
    pub at: DateTime<Utc>,
}

/// Every event name there is: names read back from another node are
/// matched against these.
pub const NAMES: &[&str] = &[
    "session.started",
    "session.updated",
    "session.completed",
    "session.cancelled",
    "payment.link_created",
    "payment.paid",
    "charger.connected",
    "charger.disconnected",
    "connector.status",
    "anomaly",
];

/// The way to the other nodes: where this node's events go, and how many
/// listen elsewhere.
pub struct Elsewhere {
    /// Events to write for the other nodes, in order.
    pub forward: mpsc::Sender<Arc<Event>>,
    /// Listeners on the other nodes, as their last heartbeats said.
    pub listeners: AtomicUsize,
    /// Woken when a listener subscribes here, so the others hear at once.
    pub subscribed: Notify,
}

#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Arc<Event>>,
    elsewhere: Arc<OnceLock<Arc<Elsewhere>>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            sender: broadcast::channel(CAPACITY).0,
            elsewhere: Default::default(),
        }
    }
}

impl Events {
    /// Whether anyone listens, here or on another node: callers skip
    /// building events otherwise.
    pub fn listened(&self) -> bool {
        self.sender.receiver_count() > 0 || self.listened_elsewhere()
    }

    fn listened_elsewhere(&self) -> bool {
        self.elsewhere
            .get()
            .is_some_and(|e| e.listeners.load(Ordering::Relaxed) > 0)
    }

    /// Listeners on this node.
    pub fn local_listeners(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Connects these events to the other nodes (once, at start).
    pub fn join_cluster(&self, elsewhere: Arc<Elsewhere>) {
        let _ = self.elsewhere.set(elsewhere);
    }

    pub fn publish(&self, name: &'static str, user_id: Option<String>, data: Value) {
        if !self.listened() {
            return;
        }
        let event = Arc::new(Event {
            name,
            user_id,
            data,
            at: Utc::now(),
        });
        if let Some(elsewhere) = self.elsewhere.get() {
            if elsewhere.listeners.load(Ordering::Relaxed) > 0 {
                if let Err(e) = elsewhere.forward.try_send(event.clone()) {
                    tracing::warn!(event = name, "event not forwarded to the other nodes: {e}");
                }
            }
        }
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(event);
        }
    }

    /// An event another node published, for the listeners of this one.
    pub fn deliver_from_elsewhere(&self, event: Event) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(event));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        let receiver = self.sender.subscribe();
        if let Some(elsewhere) = self.elsewhere.get() {
            elsewhere.subscribed.notify_one();
        }
        receiver
    }
}
