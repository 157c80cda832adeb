//! Outgoing webhooks: signed JSON POSTs to the receivers in
//! `CSMS_WEBHOOK_URLS`, from a durable outbox.
//!
//! The database's own triggers write an event in the same transaction as
//! the change it describes (a session started, completed or cancelled; a
//! payment link created or paid), so an event exists exactly when its change
//! was committed, whichever code path made it, and is never lost to a crash.
//! Chargers connecting and disconnecting, which change no row, are written
//! by the connection itself. This worker gives each new event one delivery
//! per receiver and POSTs what is due: at least once, retried with
//! exponential backoff (from `CSMS_WEBHOOK_RETRY`, doubling, at most an hour
//! apart) for a day, never on a charger's path. Each delivery is claimed
//! with a compare-and-set before it is sent, so two workers (two nodes on
//! one PostgreSQL) do not send it twice at once; with several nodes the
//! worker runs its rounds on the node holding the `webhooks` lease only.
//!
//! The body is `{"id": "evt_…", "type": "session.completed", "createdAt":
//! "…", "data": {…}}`; `id` is stable across retries, for receivers to
//! deduplicate. `CSMS-Signature: t=UNIX,v1=HEX` is HMAC-SHA256 of
//! `"{t}.{body}"` with `CSMS_WEBHOOK_SECRET`: the scheme of Stripe's
//! `Stripe-Signature`, so the same verification code works.

use crate::config::Config;
use crate::store::{DueDelivery, SharedStore};
use chrono::{TimeZone, Utc};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How often the outbox is looked at.
pub const POLL: Duration = Duration::from_millis(250);
/// How long one POST may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is reserved for the worker sending it.
const LEASE: Duration = Duration::from_secs(60);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a delivery is retried before it is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Deliveries sent at once.
const CONCURRENCY: usize = 8;
/// How long ended deliveries (and their events) are kept, for operators to
/// look at.
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often old ones are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones.
pub fn backoff(first: Duration, attempts: i64) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 30) as u32;
    first.saturating_mul(1u32 << doublings).min(MAX_BACKOFF)
}

/// The JSON body of an event's POST.
pub fn body(d: &DueDelivery) -> String {
    let data: Value = serde_json::from_str(&d.data).unwrap_or(Value::Null);
    let created = Utc
        .timestamp_millis_opt(d.created_ms)
        .single()
        .map(crate::ocpp::time::format_ms)
        .unwrap_or_default();
    json!({
        "id": format!("evt_{}", d.event_id),
        "type": d.kind,
        "createdAt": created,
        "data": data,
    })
    .to_string()
}

/// Whether webhooks are configured at all.
pub fn enabled(config: &Config) -> bool {
    !config.webhook_urls.0.is_empty()
}

/// Writes an event that no committed change carries (a charger connecting).
pub async fn enqueue(store: &SharedStore, config: &Config, kind: &str, data: Value) {
    if !enabled(config) {
        return;
    }
    if let Err(e) = store
        .enqueue_webhook_event(kind, &data.to_string(), now_ms())
        .await
    {
        tracing::warn!(kind, "webhook event not stored: {e:#}");
    }
}

/// Delivers the outbox for the life of the server (on one node of a
/// cluster at a time).
pub async fn run(store: SharedStore, config: Arc<Config>, cluster: crate::cluster::Cluster) {
    let urls = config.webhook_urls.0.clone();
    let secret = config.webhook_secret.clone().unwrap_or_default();
    if urls.is_empty() || secret.is_empty() {
        // No receivers: the triggers' events are dropped as they come, so
        // the outbox stays empty and a receiver configured later is not
        // sent what happened before it.
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            if !cluster.lease("webhooks", Duration::from_secs(5)).await {
                continue;
            }
            while let Ok(500) = store.dispatch_webhook_events(&[], now_ms(), 500).await {}
        }
    }
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhooks disabled: no HTTP client: {e}");
            return;
        }
    };
    let sender = Sender {
        store,
        client,
        secret: Arc::from(secret),
        first_retry: config.webhook_retry,
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_at = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if !cluster.lease("webhooks", POLL).await {
            continue;
        }
        if let Err(e) = sender.round(&urls).await {
            tracing::warn!("webhook round failed: {e:#}");
        }
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = tokio::time::Instant::now();
            let before = now_ms() - KEEP.as_millis() as i64;
            match sender.store.prune_webhooks(before).await {
                Ok(n) if n > 0 => tracing::info!(events = n, "old webhook events deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!("pruning webhook events failed: {e:#}"),
            }
        }
    }
}

#[derive(Clone)]
struct Sender {
    store: SharedStore,
    client: reqwest::Client,
    secret: Arc<str>,
    first_retry: Duration,
}

impl Sender {
    async fn round(&self, urls: &[String]) -> anyhow::Result<()> {
        while self
            .store
            .dispatch_webhook_events(urls, now_ms(), 500)
            .await?
            == 500
        {}
        loop {
            let due = self.store.due_webhook_deliveries(now_ms(), 100).await?;
            if due.is_empty() {
                return Ok(());
            }
            let count = due.len();
            let mut claimed = Vec::new();
            for d in due {
                let lease = now_ms() + LEASE.as_millis() as i64;
                if self.store.claim_webhook_delivery(&d, lease).await? {
                    claimed.push(d);
                }
            }
            futures_util::stream::iter(claimed)
                .for_each_concurrent(CONCURRENCY, |d| {
                    let sender = self.clone();
                    async move { sender.deliver(d).await }
                })
                .await;
            if count < 100 {
                return Ok(());
            }
        }
    }

    async fn deliver(&self, d: DueDelivery) {
        let body = body(&d);
        let t = Utc::now().timestamp();
        let signature = crate::payments::stripe::sign_webhook(body.as_bytes(), &self.secret, t);
        let sent = self
            .client
            .post(&d.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("CSMS-Signature", signature)
            .header("CSMS-Event-Id", format!("evt_{}", d.event_id))
            .body(body)
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the receiver answered {}", r.status())),
            Err(e) => Some(format!("not delivered: {e}")),
        };
        let attempts = d.attempts + 1;
        let result = match failure {
            None => {
                self.store
                    .webhook_delivered(d.event_id, &d.url, now_ms())
                    .await
            }
            Some(error) => {
                let next = now_ms() + backoff(self.first_retry, attempts).as_millis() as i64;
                let give_up = next - d.created_ms > GIVE_UP_AFTER.as_millis() as i64;
                if give_up {
                    tracing::warn!(event = d.event_id, url = %d.url, attempts, "webhook given up: {error}");
                } else {
                    tracing::info!(event = d.event_id, url = %d.url, attempts, "webhook will be retried: {error}");
                }
                self.store
                    .webhook_attempt_failed(
                        d.event_id,
                        &d.url,
                        attempts,
                        (!give_up).then_some(next),
                        &error,
                    )
                    .await
            }
        };
        if let Err(e) = result {
            // The lease runs out and the delivery is tried again: at least once.
            tracing::warn!(event = d.event_id, "webhook outcome not stored: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_the_first_wait_up_to_an_hour() {
        let first = Duration::from_secs(10);
        assert_eq!(backoff(first, 1), Duration::from_secs(10));
        assert_eq!(backoff(first, 2), Duration::from_secs(20));
        assert_eq!(backoff(first, 5), Duration::from_secs(160));
        assert_eq!(backoff(first, 20), MAX_BACKOFF);
        assert_eq!(backoff(first, i64::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_body_carries_a_stable_id_its_type_and_data() {
        let d = DueDelivery {
            event_id: 42,
            url: "http://x".into(),
            kind: "session.completed".into(),
            data: r#"{"id":"s1","energyWh":2000.0}"#.into(),
            created_ms: 1_705_312_800_000,
            attempts: 3,
            next_attempt_ms: 0,
        };
        let v: Value = serde_json::from_str(&body(&d)).unwrap();
        assert_eq!(
            v,
            json!({"id": "evt_42", "type": "session.completed",
                   "createdAt": "2024-01-15T10:00:00.000Z",
                   "data": {"id": "s1", "energyWh": 2000.0}})
        );
    }
}
