//! The session engine: the one place a charging session lives.
//!
//! Two sources feed it: a driver app over REST (start, battery and energy
//! updates, end) and a charger over OCPP (StartTransaction, MeterValues,
//! StopTransaction). Both produce the same [`SessionRecord`]s with the same
//! calculations ([`calc`]) and money rules ([`money`]). A session is
//! `active`, then `completed` or `cancelled`, never back.
//!
//! What a charger reports reaches a session inside the same database write as
//! the OCPP message itself (see `store::sql`, `bind_session` and
//! `sync_session`), so an acknowledged StopTransaction always has its session
//! completed. This module holds the REST-side operations: starting (with
//! RemoteStartTransaction when the station is a connected charger), updating,
//! ending (with RemoteStopTransaction), cancelling, and reading.

pub mod calc;
pub mod money;
pub mod service;
pub mod view;

pub use calc::{apply_transaction, DEFAULT_BATTERY_CAPACITY_WH};
pub use service::{Engine, EngineError, StartRequest};
