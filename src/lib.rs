//! `csms`: a charging station management system.
//!
//! Chargers speak OCPP 1.6J over WebSocket ([`charger`], [`ocpp`]); what they
//! report is stored durably ([`store`]); apps and operators use the REST API
//! ([`api`]). [`app::Application`] puts the parts together.

pub mod api;
pub mod app;
pub mod charger;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod ocpp;
pub mod payments;
pub mod state;
pub mod store;
pub mod webhooks;
