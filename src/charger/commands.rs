//! Server-to-charger commands: every CS→CP action of OCPP 1.6 and its security
//! extension can be sent with [`Registry::call`] (JSON in, JSON out, checked
//! against the schemas both ways). For the core profile, [`Registry::send`]
//! adds typed requests and answers using rust-ocpp's payload types.

use super::registry::Registry;
use crate::ocpp::CallError;
use rust_ocpp::v1_6::messages as m;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a command did not get an answer from the charger.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    #[error("charger is not connected")]
    Offline,
    #[error("charger has too many commands waiting")]
    Busy,
    #[error("charger did not answer in time")]
    Timeout,
    #[error("connection to the charger closed before it answered")]
    ConnectionLost,
    #[error("{0} is not a server-to-charger OCPP 1.6 action")]
    UnknownAction(String),
    #[error("request does not match the OCPP 1.6 schema: {0}")]
    InvalidRequest(CallError),
    #[error("charger answered with a payload that does not match the schema: {0}")]
    InvalidResponse(String),
    #[error("charger answered with CALLERROR {code}: {description}")]
    Rejected {
        code: String,
        description: String,
        details: serde_json::Value,
    },
}

/// A core-profile request type the server can send, with its answer type.
pub trait OcppCommand: Serialize {
    const ACTION: &'static str;
    type Response: DeserializeOwned;
}

macro_rules! commands {
    ($($module:ident :: $request:ident => $response:ident as $action:literal),* $(,)?) => {
        $(impl OcppCommand for m::$module::$request {
            const ACTION: &'static str = $action;
            type Response = m::$module::$response;
        })*
    };
}

commands! {
    cancel_reservation::CancelReservationRequest => CancelReservationResponse as "CancelReservation",
    change_availability::ChangeAvailabilityRequest => ChangeAvailabilityResponse as "ChangeAvailability",
    change_configuration::ChangeConfigurationRequest => ChangeConfigurationResponse as "ChangeConfiguration",
    clear_cache::ClearCacheRequest => ClearCacheResponse as "ClearCache",
    clear_charging_profile::ClearChargingProfileRequest => ClearChargingProfileResponse as "ClearChargingProfile",
    data_transfer::DataTransferRequest => DataTransferResponse as "DataTransfer",
    get_composite_schedule::GetCompositeScheduleRequest => GetCompositeScheduleResponse as "GetCompositeSchedule",
    get_configuration::GetConfigurationRequest => GetConfigurationResponse as "GetConfiguration",
    get_diagnostics::GetDiagnosticsRequest => GetDiagnosticsResponse as "GetDiagnostics",
    get_local_list_version::GetLocalListVersionRequest => GetLocalListVersionResponse as "GetLocalListVersion",
    remote_start_transaction::RemoteStartTransactionRequest => RemoteStartTransactionResponse as "RemoteStartTransaction",
    remote_stop_transaction::RemoteStopTransactionRequest => RemoteStopTransactionResponse as "RemoteStopTransaction",
    reserve_now::ReserveNowRequest => ReserveNowResponse as "ReserveNow",
    reset::ResetRequest => ResetResponse as "Reset",
    send_local_list::SendLocalListRequest => SendLocalListResponse as "SendLocalList",
    set_charging_profile::SetChargingProfileRequest => SetChargingProfileResponse as "SetChargingProfile",
    trigger_message::TriggerMessageRequest => TriggerMessageResponse as "TriggerMessage",
    unlock_connector::UnlockConnectorRequest => UnlockConnectorResponse as "UnlockConnector",
    update_firmware::UpdateFirmwareRequest => UpdateFirmwareResponse as "UpdateFirmware",
}

impl Registry {
    /// Sends a typed core-profile command and reads the typed answer.
    pub async fn send<C: OcppCommand>(
        &self,
        charger_id: &str,
        request: &C,
    ) -> Result<C::Response, CommandError> {
        let payload = serde_json::to_value(request).map_err(|e| {
            CommandError::InvalidRequest(CallError::new(
                crate::ocpp::ErrorCode::FormationViolation,
                e.to_string(),
            ))
        })?;
        let answer = self.call(charger_id, C::ACTION, payload).await?;
        serde_json::from_value(answer).map_err(|e| CommandError::InvalidResponse(e.to_string()))
    }
}
