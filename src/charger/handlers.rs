//! What the central system does with each charger-to-server message, and what
//! it answers. Payloads arrive here already checked against their schema.
//!
//! Transaction messages are answered only after what they carry is committed
//! (the store's writes return after the commit). A failed sanity check never
//! withholds an answer: the message is answered, kept and flagged.

use crate::engine::charging::{self, ChargerState, MeterValuesIn, ReadingIn, StopIn, StopOutcome};
use crate::ocpp::payload::{self, SampledValue};
use crate::ocpp::time::{format_ms, now_ms, parse_charger_time};
use crate::ocpp::{CallError, ErrorCode};
use crate::state::AppState;
use crate::store::*;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// The per-connection view a handler works with.
pub struct ChargerContext {
    pub charger_id: String,
    pub state: AppState,
    /// What the central system last told this charger about its registration.
    /// A charger accepted before need not boot again after reconnecting.
    pub registration: Option<RegistrationStatus>,
    /// What the engine knows of this charger's transactions.
    pub charging: ChargerState,
}

impl ChargerContext {
    pub fn new(
        charger_id: String,
        state: AppState,
        registration: Option<RegistrationStatus>,
    ) -> Self {
        ChargerContext {
            charging: ChargerState::new(&charger_id),
            charger_id,
            state,
            registration,
        }
    }

    pub async fn handle(&mut self, action: &str, payload: Value) -> Result<Value, CallError> {
        match action {
            "BootNotification" => self.boot(read(payload)?).await,
            "Heartbeat" => self.heartbeat().await,
            "Authorize" => {
                let request: payload::Authorize = read(payload)?;
                Ok(json!({ "idTagInfo": self.id_tag_info(&request.id_tag).await? }))
            }
            "StartTransaction" => self.start_transaction(read(payload)?).await,
            "StopTransaction" => self.stop_transaction(read(payload)?).await,
            "MeterValues" => self.meter_values(read(payload)?).await,
            "StatusNotification" => self.status_notification(read(payload)?).await,
            "DataTransfer" => {
                let request: payload::DataTransfer = read(payload)?;
                // No vendor extensions are installed; the frame itself is in
                // the message log for an operator.
                tracing::info!(charger = %self.charger_id, vendor = %request.vendor_id, message = ?request.message_id, "DataTransfer");
                Ok(json!({ "status": "UnknownVendorId" }))
            }
            "SignCertificate" => {
                // Profile 3 certificate signing needs a CA this server does not
                // run; the CSR is kept in the message log and refused honestly.
                tracing::warn!(charger = %self.charger_id, "SignCertificate refused: no certificate authority configured");
                Ok(json!({ "status": "Rejected" }))
            }
            "FirmwareStatusNotification"
            | "DiagnosticsStatusNotification"
            | "LogStatusNotification"
            | "SignedFirmwareStatusNotification"
            | "SecurityEventNotification" => {
                // Notifications whose answer is empty; they are kept in the
                // message log, which is what an operator inspects.
                tracing::info!(charger = %self.charger_id, action, %payload, "notification");
                self.alive(Vec::new()).await?;
                Ok(json!({}))
            }
            _ => Err(CallError::new(
                ErrorCode::NotSupported,
                format!("{action} is not accepted from a charger"),
            )),
        }
    }

    async fn boot(&mut self, request: payload::BootNotification) -> Result<Value, CallError> {
        let config = &self.state.config;
        let status_if_new = match config.unknown_chargers {
            crate::config::UnknownChargers::Pending => RegistrationStatus::Pending,
            // `reject` refuses unknown identities at the handshake already.
            _ => RegistrationStatus::Accepted,
        };
        let info = BootInfo {
            vendor: request.charge_point_vendor,
            model: request.charge_point_model,
            charge_point_serial_number: request.charge_point_serial_number,
            charge_box_serial_number: request.charge_box_serial_number,
            firmware_version: request.firmware_version,
            iccid: request.iccid,
            imsi: request.imsi,
            meter_type: request.meter_type,
            meter_serial_number: request.meter_serial_number,
        };
        let now = now_ms();
        let events = self.state.engine.events();
        // Built only while someone listens (the operator console).
        let booted = events.listened().then(|| {
            json!({
                "chargerId": self.charger_id, "vendor": info.vendor, "model": info.model,
                "serialNumber": info.charge_point_serial_number, "firmwareVersion": info.firmware_version,
                "at": format_ms(now),
            })
        });
        let status = self
            .state
            .store
            .record_boot(&self.charger_id, info, status_if_new, now)
            .await
            .map_err(internal)?;
        self.registration = Some(status);
        if let Some(mut booted) = booted {
            booted["registrationStatus"] = json!(status.as_str());
            events.publish("charger.booted", None, booted);
        }
        let interval = match status {
            RegistrationStatus::Accepted => config.heartbeat_interval.as_secs(),
            _ => config.boot_retry_interval.as_secs(),
        };
        Ok(
            json!({ "status": status.as_str(), "currentTime": format_ms(now), "interval": interval }),
        )
    }

    async fn heartbeat(&self) -> Result<Value, CallError> {
        let now = now_ms();
        self.state
            .engine
            .charger_alive(&self.charger_id, now, Vec::new())
            .await
            .map_err(internal)?;
        Ok(json!({ "currentTime": format_ms(now) }))
    }

    /// Any message proves the charger alive; a heartbeat is the cheapest
    /// record of that, and carries what the handler found wrong.
    async fn alive(&self, found: Vec<NewAnomaly>) -> Result<(), CallError> {
        self.state
            .engine
            .charger_alive(&self.charger_id, now_ms(), found)
            .await
            .map_err(internal)
    }

    /// The idTagInfo for `id_tag`: Accepted only for a tag that belongs to a
    /// user and is neither blocked nor expired.
    async fn id_tag_info(&self, id_tag: &str) -> Result<Value, CallError> {
        let tag = self.state.store.id_tag(id_tag).await.map_err(internal)?;
        let Some(tag) = tag else {
            return Ok(json!({ "status": "Invalid" }));
        };
        let status = match tag.status.as_str() {
            "Blocked" => "Blocked",
            "Expired" => "Expired",
            "Invalid" => "Invalid",
            _ if tag.expiry_date.is_some_and(|at| at <= Utc::now()) => "Expired",
            _ if tag.user_id.is_none() => "Invalid",
            _ => "Accepted",
        };
        let mut info = json!({ "status": status });
        if let Some(expiry) = tag.expiry_date {
            info["expiryDate"] = json!(format_ms(expiry));
        }
        if let Some(parent) = tag.parent_id_tag {
            info["parentIdTag"] = json!(parent);
        }
        Ok(info)
    }

    /// A charger's timestamp; one that cannot be read, or has no zone, is
    /// noted in `found` (and an unreadable one replaced by now).
    fn charger_time(
        &self,
        text: &str,
        transaction_id: Option<i64>,
        found: &mut Vec<NewAnomaly>,
    ) -> DateTime<Utc> {
        match parse_charger_time(text) {
            Some(t) => {
                if t.assumed_utc {
                    found.push(charging::anomaly(
                        &self.charger_id,
                        transaction_id,
                        "timestamp_without_zone",
                        json!({ "timestamp": text }),
                        now_ms(),
                    ));
                }
                t.at
            }
            None => {
                found.push(charging::anomaly(
                    &self.charger_id,
                    transaction_id,
                    "unreadable_timestamp",
                    json!({ "timestamp": text }),
                    now_ms(),
                ));
                now_ms()
            }
        }
    }

    async fn start_transaction(
        &mut self,
        request: payload::StartTransaction,
    ) -> Result<Value, CallError> {
        let mut found = Vec::new();
        let start_time = self.charger_time(&request.timestamp, None, &mut found);
        let mut id_tag_info = self.id_tag_info(&request.id_tag).await?;
        let outcome = self
            .state
            .engine
            .start_transaction(
                &mut self.charging,
                NewTransaction {
                    charger_id: self.charger_id.clone(),
                    connector_id: request.connector_id,
                    id_tag: request.id_tag,
                    meter_start: request.meter_start,
                    start_time,
                    reservation_id: request.reservation_id,
                    id_tag_status: id_tag_info["status"]
                        .as_str()
                        .unwrap_or("Invalid")
                        .to_owned(),
                    received_at: now_ms(),
                    default_tariff: Tariff {
                        price_micros: self.state.config.default_price_micros,
                        currency: self.state.config.default_currency.clone(),
                    },
                    anomalies: found,
                },
            )
            .await
            .map_err(internal)?;
        if outcome.retransmission {
            tracing::info!(charger = %self.charger_id, transaction_id = outcome.transaction.id, "retransmitted StartTransaction");
        }
        // The stored verdict, so a retransmission hears what the original did.
        id_tag_info["status"] = json!(outcome.id_tag_status);
        Ok(json!({ "transactionId": outcome.transaction.id, "idTagInfo": id_tag_info }))
    }

    async fn stop_transaction(
        &mut self,
        request: payload::StopTransaction,
    ) -> Result<Value, CallError> {
        let tx_id = Some(request.transaction_id);
        let mut found = Vec::new();
        let stop_time = self.charger_time(&request.timestamp, tx_id, &mut found);
        let readings = self.readings(&request.transaction_data, tx_id, &mut found);
        let outcome = self
            .state
            .engine
            .stop_transaction(
                &mut self.charging,
                StopIn {
                    transaction_id: request.transaction_id,
                    id_tag: request.id_tag.clone(),
                    meter_stop: request.meter_stop,
                    stop_time,
                    reason: request.reason,
                    readings,
                    received_at: now_ms(),
                },
                found,
            )
            .await
            .map_err(internal)?;
        if outcome != StopOutcome::Stopped {
            tracing::info!(charger = %self.charger_id, transaction_id = request.transaction_id, ?outcome, "StopTransaction kept without effect");
        }
        Ok(match request.id_tag {
            Some(tag) => json!({ "idTagInfo": self.id_tag_info(&tag).await? }),
            None => json!({}),
        })
    }

    async fn meter_values(&mut self, request: payload::MeterValues) -> Result<Value, CallError> {
        let mut found = Vec::new();
        let readings = self.readings(&request.meter_value, request.transaction_id, &mut found);
        self.state
            .engine
            .meter_values(
                &mut self.charging,
                MeterValuesIn {
                    connector_id: request.connector_id,
                    transaction_id: request.transaction_id,
                    readings,
                    received_at: now_ms(),
                },
                found,
            )
            .await
            .map_err(internal)?;
        Ok(json!({}))
    }

    fn readings(
        &self,
        values: &[payload::MeterValue],
        transaction_id: Option<i64>,
        found: &mut Vec<NewAnomaly>,
    ) -> Vec<ReadingIn> {
        values
            .iter()
            .map(|meter_value| {
                let at = self.charger_time(&meter_value.timestamp, transaction_id, found);
                ReadingIn {
                    at,
                    samples: meter_value
                        .sampled_value
                        .iter()
                        .map(|s| sample(at, s))
                        .collect(),
                }
            })
            .collect()
    }

    async fn status_notification(
        &mut self,
        request: payload::StatusNotification,
    ) -> Result<Value, CallError> {
        let now = now_ms();
        let mut found = Vec::new();
        let status_at = match &request.timestamp {
            Some(text) => self.charger_time(text, None, &mut found),
            None => now,
        };
        let closed = self
            .state
            .engine
            .connector_status(
                &mut self.charging,
                ConnectorStatus {
                    charger_id: self.charger_id.clone(),
                    connector_id: request.connector_id,
                    status: request.status,
                    error_code: request.error_code,
                    info: request.info,
                    vendor_id: request.vendor_id,
                    vendor_error_code: request.vendor_error_code,
                    status_at,
                    updated_at: now,
                },
                found,
            )
            .await
            .map_err(internal)?;
        if !closed.is_empty() {
            tracing::warn!(charger = %self.charger_id, ?closed, "connector Available with open transactions: closed them");
        }
        Ok(json!({}))
    }
}

fn sample(at: DateTime<Utc>, s: &SampledValue) -> Sample {
    Sample {
        sampled_at: at,
        measurand: s.measurand().to_owned(),
        phase: s.phase.clone(),
        unit: s.unit.clone(),
        context: s.context.clone(),
        location: s.location.clone(),
        format: s.format.clone(),
        value: s.value.clone(),
    }
}

/// Reads a schema-checked payload into its struct. A failure here means the
/// schema let through something the struct cannot hold (say, an integer
/// beyond i64): a property constraint, not a server fault.
fn read<T: DeserializeOwned>(payload: Value) -> Result<T, CallError> {
    serde_json::from_value(payload)
        .map_err(|e| CallError::new(ErrorCode::PropertyConstraintViolation, e.to_string()))
}

fn internal(e: anyhow::Error) -> CallError {
    tracing::error!("storage failure while handling a charger message: {e:#}");
    CallError::internal()
}
