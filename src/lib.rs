//! `csms`: a charging station management system.
//!
//! Chargers speak OCPP 1.6J over WebSocket ([`charger`], [`ocpp`]); what they
//! report is stored durably ([`store`]); apps and operators use the REST API
//! ([`api`]). [`app::Application`] puts the parts together.

pub mod api;
pub mod app;
pub mod charger;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod metrics;
/// OCPP-J 1.6 on the wire, shared with the charger simulator: the `ocpp-j`
/// crate (`crates/ocpp-j/`), under the name the server's modules use.
pub use ocpp_j as ocpp;
pub mod payments;
pub mod state;
pub mod store;
pub mod webhooks;
