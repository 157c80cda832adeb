//! Live events: what changed, told to whoever listens (the Server-Sent
//! Events streams of the API), always after the change is committed.
//!
//! One broadcast channel per server. Publishing costs nothing while nobody
//! listens (no session is read back for an event nobody receives); a
//! listener that falls behind by more than [`CAPACITY`] events is told how
//! many it missed and goes on with the newest.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast;

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

#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Events {
    /// Whether anyone listens: callers skip building events otherwise.
    pub fn listened(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn publish(&self, name: &'static str, user_id: Option<String>, data: Value) {
        if !self.listened() {
            return;
        }
        let _ = self.sender.send(Arc::new(Event {
            name,
            user_id,
            data,
            at: Utc::now(),
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}
