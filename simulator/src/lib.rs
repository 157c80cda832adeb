//! `csms-sim`: OCPP 1.6J chargers that behave like real ones, from a single
//! charger a person watches to tens of thousands as a load test.
//!
//! - [`protocol`]: OCPP-J frames and timestamps;
//! - [`clock`]: simulated, accelerated time;
//! - [`vehicle`]: battery, charger hardware and meter physics;
//! - [`charger`]: one charge point (connection, outbox, sessions, server commands);
//! - [`summary`]: counters and per-session records of a run.

pub mod charger;
pub mod clock;
pub mod protocol;
pub mod summary;
pub mod vehicle;

pub use charger::connection::Endpoint;
pub use charger::{spawn, ChargerConfig, ChargerHandle, ChargerView, Command};
pub use clock::SimClock;
pub use summary::{Recorder, SessionRecord, Summary};
pub use vehicle::{ChargerModel, PowerKind, Vehicle, VehicleModel};
