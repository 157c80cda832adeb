//! The charger's outgoing CALLs, in order, including the offline queue.
//!
//! OCPP 1.6 (§4.7, "Transaction-related messages") asks a charger to keep
//! StartTransaction, StopTransaction and transaction MeterValues while it is
//! offline and deliver them in order, with the timestamps of when they happened,
//! once it is back. The timestamp is written into the payload when the message is
//! made, never when it is sent, so a replay hours later still carries the
//! original time.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub action: String,
    pub payload: Value,
    /// Local number of the transaction whose server-assigned id goes into
    /// `payload.transactionId` when the message is sent: a StopTransaction made
    /// offline does not yet know the id the server will give its StartTransaction.
    pub tx: Option<u64>,
    /// The connector an Authorize was sent for, so its answer can act on it.
    pub connector: Option<u32>,
    /// The message id, fixed at the first send so a retransmission can reuse it.
    pub id: Option<String>,
    /// Charger time at which the message was made.
    pub created: DateTime<Utc>,
    /// How many times it was sent without an answer.
    pub attempts: u32,
}

impl Outgoing {
    pub fn new(action: &str, payload: Value, created: DateTime<Utc>) -> Self {
        Outgoing {
            action: action.to_string(),
            payload,
            tx: None,
            connector: None,
            id: None,
            created,
            attempts: 0,
        }
    }

    pub fn for_tx(mut self, tx: u64) -> Self {
        self.tx = Some(tx);
        self
    }

    pub fn for_connector(mut self, connector: u32) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Messages that must reach the server even across an outage.
    pub fn survives_outage(&self) -> bool {
        matches!(
            self.action.as_str(),
            "StartTransaction" | "StopTransaction" | "MeterValues" | "StatusNotification"
        )
    }

    pub fn is_transaction_message(&self) -> bool {
        matches!(
            self.action.as_str(),
            "StartTransaction" | "StopTransaction" | "MeterValues"
        )
    }
}

#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Outgoing>,
}

impl Outbox {
    pub fn push(&mut self, m: Outgoing) {
        self.queue.push_back(m);
    }

    /// Puts back a message that was sent but not answered; it goes first again.
    pub fn put_back(&mut self, m: Outgoing) {
        self.queue.push_front(m);
    }

    /// Puts a message ahead of everything queued (BootNotification after a reconnect).
    pub fn push_front(&mut self, m: Outgoing) {
        self.queue.push_front(m);
    }

    pub fn front(&self) -> Option<&Outgoing> {
        self.queue.front()
    }

    pub fn pop(&mut self) -> Option<Outgoing> {
        self.queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Outgoing> {
        self.queue.iter()
    }

    /// The connection is gone: keep what must be replayed, in order, and drop
    /// what only makes sense live (Heartbeat, Authorize, BootNotification, ...).
    pub fn on_disconnect(&mut self) {
        self.queue.retain(Outgoing::survives_outage);
    }

    /// Removes every message of one kind (a fresh BootNotification replaces a queued one).
    pub fn remove_action(&mut self, action: &str) {
        self.queue.retain(|m| m.action != action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, min, 0).unwrap()
    }

    fn msg(action: &str, min: u32) -> Outgoing {
        let ts = ocpp_j::time::format_ms(at(min));
        Outgoing::new(action, json!({ "timestamp": ts }), at(min))
    }

    #[test]
    fn an_outage_keeps_transaction_messages_in_order_with_their_timestamps() {
        let mut q = Outbox::default();
        q.push(msg("StartTransaction", 0));
        q.push(msg("Heartbeat", 1));
        q.push(msg("MeterValues", 2));
        q.push(msg("Authorize", 3));
        q.push(msg("MeterValues", 4));
        q.push(msg("StatusNotification", 5));
        q.push(msg("StopTransaction", 6));
        q.on_disconnect();
        let replay: Vec<(String, String)> = std::iter::from_fn(|| q.pop())
            .map(|m| {
                (
                    m.action,
                    m.payload["timestamp"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            replay,
            vec![
                ("StartTransaction".into(), "2026-03-01T12:00:00.000Z".into()),
                ("MeterValues".into(), "2026-03-01T12:02:00.000Z".into()),
                ("MeterValues".into(), "2026-03-01T12:04:00.000Z".into()),
                (
                    "StatusNotification".into(),
                    "2026-03-01T12:05:00.000Z".into()
                ),
                ("StopTransaction".into(), "2026-03-01T12:06:00.000Z".into()),
            ]
        );
    }

    #[test]
    fn an_unanswered_message_goes_back_first_with_its_id() {
        let mut q = Outbox::default();
        q.push(msg("MeterValues", 1));
        let mut first = msg("StartTransaction", 0);
        first.id = Some("42".into());
        q.put_back(first);
        q.on_disconnect();
        let m = q.pop().unwrap();
        assert_eq!(
            (m.action.as_str(), m.id.as_deref()),
            ("StartTransaction", Some("42"))
        );
        assert_eq!(q.pop().unwrap().action, "MeterValues");
    }
}
