//! What every handler shares: settings, the store, the live chargers.

use crate::charger::auth::FailureLimiter;
use crate::charger::Registry;
use crate::config::Config;
use crate::store::SharedStore;
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub registry: Registry,
    pub engine: crate::engine::Engine,
    pub payments: crate::payments::Payments,
    pub jwt: Arc<crate::api::auth::JwtKeys>,
    /// Failed charger handshakes per identity and per address.
    pub handshake_failures: Arc<FailureLimiter>,
    /// One permit per charger connection, up to `max_chargers`.
    pub connection_slots: Arc<Semaphore>,
    /// Turns true once the server is stopping; connection tasks watch it.
    pub shutdown: watch::Receiver<bool>,
    /// What `/metrics` reports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Failed logins per account and per address.
    pub login_failures: Arc<crate::api::auth::LoginLimits>,
}
