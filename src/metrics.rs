//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text
//! format (which Prometheus reads).
//!
//! Two kinds of figure. What happens on this node (OCPP messages and their
//! answer latency, handshake refusals, the writer's batches and commits, the
//! message log's lag, connected chargers) is counted in memory where it
//! happens and starts from zero with the process, as Prometheus expects of a
//! counter. What the database holds (sessions by status, energy delivered,
//! payment links, balance checks) is read from it at each scrape, so every
//! node reports the same totals and nothing is lost across a restart.

use crate::store::{Store, StoreFigures, WriterMetrics};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

/// The node's metrics; one per server, shared by every part that counts.
pub struct Metrics {
    registry: Mutex<Registry>,
    ocpp_messages: Family<Labels, Counter>,
    ocpp_answer_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    handshake_refusals: Family<Labels, Counter>,
    connected: Gauge,
    log_lag: Gauge,
    sessions: Family<Labels, Gauge>,
    energy_wh: Gauge<f64, AtomicU64>,
    payment_links: Family<Labels, Gauge>,
    balance_checks: Family<Labels, Gauge>,
    database_errors: Counter,
}

fn latency_buckets() -> Histogram {
    // 0.5 ms to about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

impl Metrics {
    pub fn new(writer: WriterMetrics) -> Self {
        let mut registry = Registry::with_prefix("csms");
        let ocpp_messages = Family::<Labels, Counter>::default();
        let ocpp_answer_seconds =
            Family::<Labels, Histogram>::new_with_constructor(latency_buckets as fn() -> Histogram);
        let handshake_refusals = Family::<Labels, Counter>::default();
        let connected = Gauge::default();
        let log_lag = Gauge::default();
        let sessions = Family::<Labels, Gauge>::default();
        let energy_wh = Gauge::<f64, AtomicU64>::default();
        let payment_links = Family::<Labels, Gauge>::default();
        let balance_checks = Family::<Labels, Gauge>::default();
        let database_errors = Counter::default();
        registry.register(
            "chargers_connected",
            "Chargers with a live OCPP connection to this node",
            connected.clone(),
        );
        registry.register(
            "ocpp_messages",
            "OCPP CALLs received from chargers, by action and outcome (answered, or the CALLERROR code)",
            ocpp_messages.clone(),
        );
        registry.register(
            "ocpp_answer_seconds",
            "Time from receiving a charger's CALL to sending its answer, by action",
            ocpp_answer_seconds.clone(),
        );
        registry.register(
            "handshake_refusals",
            "Charger WebSocket handshakes refused, by reason",
            handshake_refusals.clone(),
        );
        registry.register(
            "write_batches",
            "Group-commit batches written, by outcome",
            writer.batches,
        );
        registry.register(
            "write_batch_size",
            "Writes per group-commit batch",
            writer.batch_size,
        );
        registry.register(
            "write_commit_seconds",
            "Time to write and commit one group-commit batch",
            writer.commit_seconds,
        );
        registry.register(
            "message_log_lag",
            "Message-log frames received and not yet committed (queued, or held while the database refuses them)",
            log_lag.clone(),
        );
        registry.register(
            "database_errors",
            "Database operations that failed: write batches, and reads behind an API answer or a charger's answer",
            database_errors.clone(),
        );
        registry.register(
            "sessions",
            "Charging sessions in the database, by status",
            sessions.clone(),
        );
        registry.register(
            "energy_delivered_wh",
            "Energy of every completed session in the database, Wh",
            energy_wh.clone(),
        );
        registry.register(
            "payment_links",
            "Payment links in the database, by provider and status",
            payment_links.clone(),
        );
        registry.register(
            "balance_checks",
            "Balance checks in the database, by provider and status",
            balance_checks.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            ocpp_messages,
            ocpp_answer_seconds,
            handshake_refusals,
            connected,
            log_lag,
            sessions,
            energy_wh,
            payment_links,
            balance_checks,
            database_errors,
        }
    }

    /// A CALL from a charger was answered (`outcome` "answered") or refused
    /// with a CALLERROR (`outcome` its code), `took` after it arrived.
    pub fn ocpp_answered(&self, action: &str, outcome: &str, took: Duration) {
        self.ocpp_messages
            .get_or_create(&vec![
                ("action", action.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.ocpp_answer_seconds
            .get_or_create(&vec![("action", action.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// A charger's handshake was refused, for `reason` (a short word).
    pub fn handshake_refused(&self, reason: &'static str) {
        self.handshake_refusals
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// A database operation failed.
    pub fn database_error(&self) {
        self.database_errors.inc();
    }

    /// The exposition: node figures as counted, database figures read now.
    pub async fn render(&self, store: &dyn Store, connected: usize) -> anyhow::Result<String> {
        self.connected.set(connected as i64);
        self.log_lag.set(store.log_lag() as i64);
        let figures = match store.figures().await {
            Ok(figures) => Some(figures),
            Err(e) => {
                self.database_errors.inc();
                tracing::warn!("metrics: reading the database's figures failed: {e:#}");
                None
            }
        };
        if let Some(figures) = figures {
            self.set_figures(figures);
        }
        let mut text = String::new();
        encode(
            &mut text,
            &self.registry.lock().unwrap_or_else(|e| e.into_inner()),
        )?;
        Ok(text)
    }

    fn set_figures(&self, f: StoreFigures) {
        // Cleared first: a status with no row left shows no series rather
        // than its last count.
        self.sessions.clear();
        for (status, n) in f.sessions_by_status {
            self.sessions
                .get_or_create(&vec![("status", status)])
                .set(n);
        }
        self.energy_wh.set(f.completed_energy_wh);
        self.payment_links.clear();
        for (provider, status, n) in f.payment_links {
            self.payment_links
                .get_or_create(&vec![("provider", provider), ("status", status)])
                .set(n);
        }
        self.balance_checks.clear();
        for (provider, status, n) in f.balance_checks {
            self.balance_checks
                .get_or_create(&vec![("provider", provider), ("status", status)])
                .set(n);
        }
    }
}
