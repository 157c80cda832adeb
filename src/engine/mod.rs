//! The session engine: the one place a charging session lives.
//!
//! Two sources feed it: a driver app over REST (start, battery and energy
//! updates, end) and a charger over OCPP (StartTransaction, MeterValues,
//! StopTransaction). Both produce the same [`SessionRecord`]s with the same
//! calculations ([`calc`]) and money rules ([`money`]). A session is
//! `active`, then `completed` or `cancelled`, never back.
//!
//! The engine decides, the store persists. [`charging`] decides what a
//! charger's StartTransaction, MeterValues, StopTransaction and
//! StatusNotification change (the transaction, its readings, its session,
//! anomalies) and hands the store one write that commits it all together, so
//! an acknowledged StopTransaction always has its session completed.
//! [`service`] holds the REST-side operations: starting (with
//! RemoteStartTransaction when the station is a connected charger), updating,
//! ending (with RemoteStopTransaction), cancelling, and reading.
//!
//! What the server sets on chargers and keeps itself is decided here too:
//! [`reservations`] (ReserveNow, CancelReservation, expiry), [`profiles`]
//! (charging profiles, re-sent when a charger comes back) and
//! [`local_list`] (local authorization lists following the idTags), and
//! [`sites`] shares a site's grid limit among its transactions.

pub mod calc;
pub mod charging;
pub mod events;
pub mod local_list;
pub mod meter;
pub mod money;
pub mod profiles;
pub mod reservations;
pub mod service;
pub mod sites;
pub mod view;

pub use calc::DEFAULT_BATTERY_CAPACITY_WH;
pub use service::{Engine, EngineError, StartRequest};
