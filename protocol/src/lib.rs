//! OCPP-J 1.6: what travels over a charger's WebSocket, and nothing else.
//!
//! This crate knows the wire format of OCPP 1.6 JSON ("OCPP-J", including the
//! messages of the 1.6 security extension), for both ends of the line:
//!
//! - [`frame`]: the three frame types (`[2, …]` CALL, `[3, …]` CALLRESULT,
//!   `[4, …]` CALLERROR), parsed by hand and encoded;
//! - [`error`]: the CALLERROR codes as OCPP-J 1.6 spells them;
//! - [`action`]: the actions of OCPP 1.6 and who may send them;
//! - [`schema`]: the official JSON schemas every payload is checked against,
//!   with failures mapped to CALLERROR codes;
//! - [`time`]: timestamps as chargers send them, and with milliseconds out;
//! - [`payload`]: lenient readers for the charger-to-server payloads a
//!   central system acts on.
//!
//! It knows no database, no HTTP and no async runtime, so the central system
//! (`csms`) and the charger simulator (`csms-sim`) share it, and it can be
//! tested (and fuzzed) on its own.

pub mod action;
pub mod error;
pub mod frame;
pub mod payload;
pub mod schema;
pub mod time;

pub use error::{CallError, ErrorCode};
pub use frame::{Call, Frame, FrameError};
