//! `csms-sim`: OCPP 1.6J chargers that behave like real ones, from a single
//! charger a person watches to tens of thousands as a load test.
//!
//! - OCPP-J itself (frames, error codes, actions, schemas, timestamps) is the
//!   `ocpp-j` crate, shared with the `csms` server;
//! - [`clock`]: simulated, accelerated time;
//! - [`vehicle`]: battery, charger hardware and meter physics;
//! - [`charger`]: one charge point (connection, outbox, sessions, server commands);
//! - [`summary`]: counters and per-session records of a run;
//! - [`scenario`]: built-in scenarios and the scenario file format;
//! - [`fleet`]: many chargers with random sessions;
//! - [`load`]: a message mix at a rate, with latency percentiles;
//! - [`bench`]: the csms server and a trivial server measured side by side;
//! - [`cli`]: the command line of the `csms-sim` binary.
//!
//! Running a fleet in-process and reading what it did:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use csms_sim::{fleet, Endpoint};
//! let summary = fleet::run(fleet::FleetConfig {
//!     endpoint: Endpoint::new("ws://127.0.0.1:8080/ocpp"),
//!     chargers: 20,
//!     speed: 60.0,
//!     session_probability: 0.5,
//!     run_for: std::time::Duration::from_secs(10),
//!     ..Default::default()
//! })
//! .await?;
//! for s in &summary.sessions {
//!     println!("{} {} tx {} {} Wh", s.charger_id, s.connector_id, s.transaction_id, s.energy_wh);
//! }
//! # Ok(()) }
//! ```

pub mod bench;
pub mod charger;
pub mod cli;
pub mod clock;
pub mod fleet;
pub mod load;
pub mod scenario;
pub mod summary;
pub mod vehicle;

pub use charger::connection::Endpoint;
pub use charger::{spawn, ChargerConfig, ChargerHandle, ChargerView, Command};
pub use clock::SimClock;
pub use fleet::FleetConfig;
pub use load::{LoadConfig, LoadReport};
pub use summary::{Recorder, SessionRecord, Summary};
pub use vehicle::{ChargerModel, PowerKind, Vehicle, VehicleModel};
