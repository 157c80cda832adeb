//! The actions of OCPP 1.6 and who may send them.

/// Actions a charger sends to the central system (core profile, firmware and
/// diagnostics, and the 1.6 security extension). The server answers all of them.
pub const CHARGER_TO_SERVER: &[&str] = &[
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
    "SecurityEventNotification",
    "SignCertificate",
    "LogStatusNotification",
    "SignedFirmwareStatusNotification",
];

/// Actions the central system sends to a charger (all of OCPP 1.6 and the
/// security extension). `DataTransfer` goes both ways.
pub const SERVER_TO_CHARGER: &[&str] = &[
    "CancelReservation",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DataTransfer",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetLocalListVersion",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SendLocalList",
    "SetChargingProfile",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
    "CertificateSigned",
    "DeleteCertificate",
    "ExtendedTriggerMessage",
    "GetInstalledCertificateIds",
    "GetLog",
    "InstallCertificate",
    "SignedUpdateFirmware",
];

/// Whether `action` names any OCPP 1.6 action at all, in either direction.
/// An unknown action is answered `NotImplemented`; a known one the server does
/// not take from a charger (say, `RemoteStartTransaction` sent *to* it) is
/// answered `NotSupported`.
pub fn is_ocpp16_action(action: &str) -> bool {
    CHARGER_TO_SERVER.contains(&action) || SERVER_TO_CHARGER.contains(&action)
}

pub fn is_charger_to_server(action: &str) -> bool {
    CHARGER_TO_SERVER.contains(&action)
}

pub fn is_server_to_charger(action: &str) -> bool {
    SERVER_TO_CHARGER.contains(&action)
}
