//! OCPP-J 1.6: what travels over a charger's WebSocket, and nothing else.
//!
//! This module knows the wire format of OCPP 1.6 JSON ("OCPP-J", including the
//! messages of the 1.6 security extension): the three frame types, the
//! CALLERROR codes, the official JSON schemas every payload is checked against,
//! and lenient readers for the payloads the server acts on. It knows no
//! database and no HTTP, so it can be tested (and fuzzed) on its own.

pub mod action;
pub mod error;
pub mod frame;
pub mod payload;
pub mod schema;
pub mod time;

pub use error::{CallError, ErrorCode};
pub use frame::{Call, Frame, FrameError};
