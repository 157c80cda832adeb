//! The charger's configuration keys (OCPP 1.6 §9.1), as GetConfiguration shows
//! them and ChangeConfiguration changes them.

use serde_json::{json, Value};

/// What ChangeConfiguration answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Accepted,
    Rejected,
    NotSupported,
}

#[derive(Debug, Clone)]
pub struct ConfigKeys {
    pub heartbeat_interval: u64,
    pub meter_value_sample_interval: u64,
    pub connection_timeout: u64,
    pub authorize_remote_tx_requests: bool,
    pub local_auth_list_enabled: bool,
    pub local_pre_authorize: bool,
    pub number_of_connectors: u32,
    pub transaction_message_attempts: u32,
    pub transaction_message_retry_interval: u64,
}

const MEASURANDS: &str =
    "Energy.Active.Import.Register,Power.Active.Import,SoC,Current.Import,Voltage";

impl ConfigKeys {
    pub fn new(connectors: u32, heartbeat_interval: u64, meter_interval: u64) -> Self {
        ConfigKeys {
            heartbeat_interval,
            meter_value_sample_interval: meter_interval,
            connection_timeout: 120,
            authorize_remote_tx_requests: false,
            local_auth_list_enabled: true,
            local_pre_authorize: false,
            number_of_connectors: connectors,
            transaction_message_attempts: 3,
            transaction_message_retry_interval: 30,
        }
    }

    /// (key, value, readonly) for every key this charger has.
    fn all(&self) -> Vec<(&'static str, String, bool)> {
        vec![
            ("HeartbeatInterval", self.heartbeat_interval.to_string(), false),
            ("MeterValueSampleInterval", self.meter_value_sample_interval.to_string(), false),
            ("MeterValuesSampledData", MEASURANDS.to_string(), true),
            ("StopTxnSampledData", MEASURANDS.to_string(), true),
            ("ConnectionTimeOut", self.connection_timeout.to_string(), false),
            ("AuthorizeRemoteTxRequests", self.authorize_remote_tx_requests.to_string(), false),
            ("LocalAuthListEnabled", self.local_auth_list_enabled.to_string(), false),
            ("LocalPreAuthorize", self.local_pre_authorize.to_string(), false),
            ("NumberOfConnectors", self.number_of_connectors.to_string(), true),
            ("TransactionMessageAttempts", self.transaction_message_attempts.to_string(), false),
            ("TransactionMessageRetryInterval", self.transaction_message_retry_interval.to_string(), false),
            ("SupportedFeatureProfiles", "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger".into(), true),
            ("ChargeProfileMaxStackLevel", "10".into(), true),
            ("ChargingScheduleAllowedChargingRateUnit", "Current,Power".into(), true),
            ("ChargingScheduleMaxPeriods", "24".into(), true),
            ("MaxChargingProfilesInstalled", "10".into(), true),
            ("LocalAuthListMaxLength", "1000".into(), true),
            ("SendLocalListMaxLength", "100".into(), true),
            ("ReserveConnectorZeroSupported", "false".into(), true),
        ]
    }

    /// The GetConfiguration answer for the requested keys (all when none).
    pub fn get(&self, keys: Option<&[Value]>) -> Value {
        let all = self.all();
        let entry =
            |(k, v, ro): &(&str, String, bool)| json!({ "key": k, "readonly": ro, "value": v });
        match keys {
            None | Some([]) => {
                json!({ "configurationKey": all.iter().map(entry).collect::<Vec<_>>() })
            }
            Some(wanted) => {
                let mut found = Vec::new();
                let mut unknown = Vec::new();
                for k in wanted.iter().filter_map(Value::as_str) {
                    match all.iter().find(|e| e.0 == k) {
                        Some(e) => found.push(entry(e)),
                        None => unknown.push(k.to_string()),
                    }
                }
                let mut answer = json!({ "configurationKey": found });
                if !unknown.is_empty() {
                    answer["unknownKey"] = json!(unknown);
                }
                answer
            }
        }
    }

    /// ChangeConfiguration: applies the value if the key is known, writable and the value valid.
    pub fn change(&mut self, key: &str, value: &str) -> Change {
        let uint = |v: &str| v.trim().parse::<u64>().ok();
        let boolean = |v: &str| match v.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        macro_rules! set {
            ($field:expr, $parsed:expr) => {
                match $parsed {
                    Some(v) => {
                        $field = v;
                        Change::Accepted
                    }
                    None => Change::Rejected,
                }
            };
        }
        match key {
            "HeartbeatInterval" => set!(self.heartbeat_interval, uint(value)),
            "MeterValueSampleInterval" => set!(self.meter_value_sample_interval, uint(value)),
            "ConnectionTimeOut" => set!(self.connection_timeout, uint(value)),
            "AuthorizeRemoteTxRequests" => set!(self.authorize_remote_tx_requests, boolean(value)),
            "LocalAuthListEnabled" => set!(self.local_auth_list_enabled, boolean(value)),
            "LocalPreAuthorize" => set!(self.local_pre_authorize, boolean(value)),
            "TransactionMessageAttempts" => set!(
                self.transaction_message_attempts,
                uint(value).map(|v| v as u32)
            ),
            "TransactionMessageRetryInterval" => {
                set!(self.transaction_message_retry_interval, uint(value))
            }
            k if self.all().iter().any(|e| e.0 == k) => Change::Rejected,
            _ => Change::NotSupported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_when_writable_and_valid() {
        let mut k = ConfigKeys::new(2, 300, 60);
        assert_eq!(k.change("HeartbeatInterval", "30"), Change::Accepted);
        assert_eq!(k.heartbeat_interval, 30);
        assert_eq!(k.change("HeartbeatInterval", "often"), Change::Rejected);
        assert_eq!(k.change("NumberOfConnectors", "4"), Change::Rejected);
        assert_eq!(k.change("Nope", "1"), Change::NotSupported);
        let got = k.get(Some(&[json!("MeterValueSampleInterval"), json!("Nope")]));
        assert_eq!(got["configurationKey"][0]["value"], "60");
        assert_eq!(got["unknownKey"][0], "Nope");
    }
}
