//! Validation against the official OCPP 1.6 JSON schemas (vendored unchanged
//! under this crate's `schemas/ocpp16/`, embedded at compile time).
//!
//! Every incoming CALL is checked before anything acts on it; outgoing
//! commands and the chargers' answers to them are checked too. Failures map to
//! the CALLERROR codes of OCPP-J 1.6. `format` (date-time) is deliberately not
//! enforced here: chargers in the field send timestamps without a zone, and the
//! contract says to answer, keep and flag those rather than refuse them
//! (see [`crate::time`]).

use crate::error::{CallError, ErrorCode};
use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

macro_rules! embedded_schemas {
    ($($name:literal),* $(,)?) => {
        &[$(
            ($name, include_str!(concat!("../schemas/ocpp16/", $name, ".json")),
             include_str!(concat!("../schemas/ocpp16/", $name, "Response.json"))),
        )*]
    };
}

/// (action, request schema, response schema) for every OCPP 1.6 action.
static SOURCES: &[(&str, &str, &str)] = embedded_schemas![
    "Authorize",
    "BootNotification",
    "CancelReservation",
    "CertificateSigned",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DataTransfer",
    "DeleteCertificate",
    "DiagnosticsStatusNotification",
    "ExtendedTriggerMessage",
    "FirmwareStatusNotification",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetInstalledCertificateIds",
    "GetLocalListVersion",
    "GetLog",
    "Heartbeat",
    "InstallCertificate",
    "LogStatusNotification",
    "MeterValues",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SecurityEventNotification",
    "SendLocalList",
    "SetChargingProfile",
    "SignCertificate",
    "SignedFirmwareStatusNotification",
    "SignedUpdateFirmware",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
];

/// The two schemas of one action, each compiled on first use: a central
/// system compiles them all at start ([`preload`]); a simulated charger only
/// pays for the few actions it meets.
struct Pair {
    action: &'static str,
    request_source: &'static str,
    response_source: &'static str,
    request: OnceLock<Validator>,
    response: OnceLock<Validator>,
}

impl Pair {
    fn request(&self) -> &Validator {
        self.request
            .get_or_init(|| compile(self.action, self.request_source))
    }

    fn response(&self) -> &Validator {
        self.response
            .get_or_init(|| compile(self.action, self.response_source))
    }
}

static VALIDATORS: LazyLock<HashMap<&'static str, Pair>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|&(action, request_source, response_source)| {
            (
                action,
                Pair {
                    action,
                    request_source,
                    response_source,
                    request: OnceLock::new(),
                    response: OnceLock::new(),
                },
            )
        })
        .collect()
});

fn compile(action: &str, source: &str) -> Validator {
    let schema: Value = serde_json::from_str(source)
        .unwrap_or_else(|e| panic!("schema of {action} is not JSON: {e}"));
    jsonschema::options()
        .should_validate_formats(false)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema of {action} does not compile: {e}"))
}

/// Compiles every schema now rather than on the first message.
pub fn preload() {
    for pair in VALIDATORS.values() {
        pair.request();
        pair.response();
    }
}

pub fn has_schema(action: &str) -> bool {
    VALIDATORS.contains_key(action)
}

/// The end of the line a CALL arrives at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    CentralSystem,
    ChargePoint,
}

/// Whether a CALL that arrived at `receiver` may be acted on, with the
/// CALLERROR OCPP-J 1.6 gives when not: an action OCPP 1.6 does not have is
/// `NotImplemented`, one that goes the other way (`RemoteStartTransaction`
/// sent to a central system) `NotSupported`, then the payload is checked
/// against the action's request schema.
pub fn check_call(receiver: Receiver, action: &str, payload: &Value) -> Result<(), CallError> {
    if !crate::action::is_ocpp16_action(action) {
        return Err(CallError::new(
            ErrorCode::NotImplemented,
            format!("Unknown action {action}"),
        ));
    }
    let (allowed, sender) = match receiver {
        Receiver::CentralSystem => (crate::action::is_charger_to_server(action), "a charger"),
        Receiver::ChargePoint => (
            crate::action::is_server_to_charger(action),
            "a central system",
        ),
    };
    if !allowed {
        return Err(CallError::new(
            ErrorCode::NotSupported,
            format!("{action} is not accepted from {sender}"),
        ));
    }
    validate_request(action, payload)
}

/// Checks the payload of a CALL `action` (either direction).
pub fn validate_request(action: &str, payload: &Value) -> Result<(), CallError> {
    check(pair(action)?.request(), payload)
}

/// Checks the CALLRESULT payload answering `action`.
pub fn validate_response(action: &str, payload: &Value) -> Result<(), CallError> {
    check(pair(action)?.response(), payload)
}

fn pair(action: &str) -> Result<&'static Pair, CallError> {
    VALIDATORS.get(action).ok_or_else(|| {
        CallError::new(
            ErrorCode::NotImplemented,
            format!("Unknown action {action}"),
        )
    })
}

fn check(validator: &Validator, payload: &Value) -> Result<(), CallError> {
    let errors: Vec<_> = validator.iter_errors(payload).collect();
    if errors.is_empty() {
        return Ok(());
    }
    // The most telling error decides the code: a wrong type or a missing field
    // says more about the sender than a range check on a neighbouring field.
    let code = errors
        .iter()
        .map(|e| code_for(&e.kind))
        .min_by_key(|c| rank(*c))
        .unwrap_or(ErrorCode::FormationViolation);
    let listed: Vec<Value> = errors
        .iter()
        .take(10)
        .map(|e| json!({"path": e.instance_path.to_string(), "message": e.to_string()}))
        .collect();
    let description = errors
        .iter()
        .take(3)
        .map(|e| describe(e))
        .collect::<Vec<_>>()
        .join("; ");
    Err(CallError::new(code, description).with_details(json!({ "errors": listed })))
}

fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.instance_path.to_string();
    if path.is_empty() {
        e.to_string()
    } else {
        format!("{path}: {e}")
    }
}

fn code_for(kind: &ValidationErrorKind) -> ErrorCode {
    use ValidationErrorKind as K;
    match kind {
        K::Type { .. } => ErrorCode::TypeConstraintViolation,
        K::Required { .. } => ErrorCode::OccurenceConstraintViolation,
        K::MinItems { .. } | K::MaxItems { .. } => ErrorCode::OccurenceConstraintViolation,
        K::Enum { .. }
        | K::Constant { .. }
        | K::MaxLength { .. }
        | K::MinLength { .. }
        | K::Minimum { .. }
        | K::Maximum { .. }
        | K::ExclusiveMinimum { .. }
        | K::ExclusiveMaximum { .. }
        | K::MultipleOf { .. }
        | K::Pattern { .. }
        | K::Format { .. }
        | K::UniqueItems => ErrorCode::PropertyConstraintViolation,
        // Fields the PDU does not define: the payload is not of the PDU's shape.
        _ => ErrorCode::FormationViolation,
    }
}

fn rank(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::TypeConstraintViolation => 0,
        ErrorCode::OccurenceConstraintViolation => 1,
        ErrorCode::FormationViolation => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(action: &str, payload: Value) -> ErrorCode {
        validate_request(action, &payload).unwrap_err().code
    }

    #[test]
    fn every_action_of_both_directions_has_a_schema() {
        for action in crate::action::CHARGER_TO_SERVER
            .iter()
            .chain(crate::action::SERVER_TO_CHARGER)
        {
            assert!(has_schema(action), "{action} has no schema");
        }
    }

    #[test]
    fn every_schema_compiles_on_preload() {
        preload();
        assert_eq!(VALIDATORS.len(), 39);
        for (action, pair) in VALIDATORS.iter() {
            assert!(
                pair.request.get().is_some() && pair.response.get().is_some(),
                "{action} not compiled"
            );
        }
    }

    #[test]
    fn a_call_is_checked_for_its_action_its_direction_and_its_payload() {
        let heartbeat = json!({});
        let check = |receiver, action, payload: &Value| {
            check_call(receiver, action, payload).map_err(|e| e.code)
        };
        assert_eq!(
            check(Receiver::CentralSystem, "Heartbeat", &heartbeat),
            Ok(())
        );
        assert_eq!(
            check(Receiver::ChargePoint, "Heartbeat", &heartbeat),
            Err(ErrorCode::NotSupported)
        );
        assert_eq!(
            check(Receiver::CentralSystem, "Reset", &json!({"type": "Soft"})),
            Err(ErrorCode::NotSupported)
        );
        assert_eq!(
            check(Receiver::ChargePoint, "Reset", &json!({"type": "Soft"})),
            Ok(())
        );
        assert_eq!(
            check(Receiver::ChargePoint, "Reset", &json!({"type": 1})),
            Err(ErrorCode::TypeConstraintViolation)
        );
        // DataTransfer goes both ways.
        let data = json!({"vendorId": "x"});
        assert_eq!(
            check(Receiver::CentralSystem, "DataTransfer", &data),
            Ok(())
        );
        assert_eq!(check(Receiver::ChargePoint, "DataTransfer", &data), Ok(()));
        for receiver in [Receiver::CentralSystem, Receiver::ChargePoint] {
            assert_eq!(
                check(receiver, "FlyToTheMoon", &heartbeat),
                Err(ErrorCode::NotImplemented)
            );
        }
    }

    #[test]
    fn a_valid_start_transaction_passes() {
        let ok = json!({"connectorId":1,"idTag":"ABC","meterStart":0,"timestamp":"2024-01-15T10:30:00.000Z"});
        assert!(validate_request("StartTransaction", &ok).is_ok());
    }

    #[test]
    fn schema_failures_map_to_the_ocpp_j_codes() {
        let base = json!({"connectorId":1,"idTag":"ABC","meterStart":0,"timestamp":"2024-01-15T10:30:00Z"});
        let mut wrong_type = base.clone();
        wrong_type["meterStart"] = json!("abc");
        assert_eq!(
            code("StartTransaction", wrong_type),
            ErrorCode::TypeConstraintViolation
        );

        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove("idTag");
        assert_eq!(
            code("StartTransaction", missing),
            ErrorCode::OccurenceConstraintViolation
        );

        let mut too_long = base.clone();
        too_long["idTag"] = json!("123456789012345678901");
        assert_eq!(
            code("StartTransaction", too_long),
            ErrorCode::PropertyConstraintViolation
        );

        assert_eq!(
            code(
                "StatusNotification",
                json!({"connectorId":1,"errorCode":"NoError","status":"Dancing"})
            ),
            ErrorCode::PropertyConstraintViolation
        );

        let mut extra = base;
        extra["surprise"] = json!(1);
        assert_eq!(
            code("StartTransaction", extra),
            ErrorCode::FormationViolation
        );
    }

    #[test]
    fn timestamps_without_a_zone_are_not_refused_by_the_schema() {
        let p =
            json!({"connectorId":1,"idTag":"ABC","meterStart":0,"timestamp":"2024-01-15T10:30:00"});
        assert!(validate_request("StartTransaction", &p).is_ok());
    }
}
