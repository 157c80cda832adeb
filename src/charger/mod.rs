//! Connected chargers: the WebSocket endpoint, one task per connection, the
//! registry of live connections and the commands sent through it.
//!
//! A frame comes in at [`connection`], is parsed and validated by
//! [`crate::ocpp`], acted on by [`handlers`] (which store through
//! [`crate::store`]), and the answer goes back out on the same task. Nothing
//! else writes to a charger's socket: other parts of the server reach a
//! charger only through the [`Registry`].

pub mod auth;
pub mod commands;
pub mod connection;
pub mod handlers;
pub mod handshake;
pub mod registry;

pub use commands::{CommandError, OcppCommand};
pub use registry::{ConnectionInfo, Registry};
