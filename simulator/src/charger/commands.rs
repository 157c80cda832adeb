//! Answers to the server-to-charger commands of OCPP 1.6 (Core, Firmware
//! Management, Local Auth List Management, Reservation, Smart Charging and
//! Remote Trigger profiles), as a real charger gives them.
//!
//! Each handler returns the answer and, separately, what the charger does once
//! the answer is on the wire: a RemoteStartTransaction is answered `Accepted`
//! before its StartTransaction is sent, a TriggerMessage before the triggered
//! message, as OCPP 1.6 requires.

use serde_json::{json, Value};

use super::config_keys::Change;
use super::outbox::Outgoing;
use super::session::Reservation;
use super::smart_charging::{Profile, Purpose, TxContext};
use super::{Charger, Scheduled};
use crate::vehicle::Vehicle;
use ocpp_j::schema::{self, Receiver};
use ocpp_j::time::parse_charger_time;
use ocpp_j::{CallError, ErrorCode};
use rand::Rng;

type Followup = Box<dyn FnOnce(&mut Charger) + Send>;

pub(super) struct Answer {
    pub result: Result<Value, CallError>,
    pub then: Followup,
}

fn ok(payload: Value) -> Answer {
    Answer {
        result: Ok(payload),
        then: Box::new(|_| {}),
    }
}

fn ok_then(payload: Value, then: impl FnOnce(&mut Charger) + Send + 'static) -> Answer {
    Answer {
        result: Ok(payload),
        then: Box::new(then),
    }
}

fn status(s: &str) -> Answer {
    ok(json!({ "status": s }))
}

type Invalid = CallError;

fn missing(key: &str) -> Invalid {
    CallError::new(
        ErrorCode::OccurenceConstraintViolation,
        format!("{key} is required"),
    )
}

fn wrong_type(key: &str) -> Invalid {
    CallError::new(
        ErrorCode::TypeConstraintViolation,
        format!("{key} has the wrong type"),
    )
}

fn req_str<'a>(p: &'a Value, key: &str) -> Result<&'a str, Invalid> {
    p.get(key)
        .ok_or_else(|| missing(key))?
        .as_str()
        .ok_or_else(|| wrong_type(key))
}

fn req_int(p: &Value, key: &str) -> Result<i64, Invalid> {
    p.get(key)
        .ok_or_else(|| missing(key))?
        .as_i64()
        .ok_or_else(|| wrong_type(key))
}

fn opt_int(p: &Value, key: &str) -> Result<Option<i64>, Invalid> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| wrong_type(key)),
    }
}

fn opt_str<'a>(p: &'a Value, key: &str) -> Result<Option<&'a str>, Invalid> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| wrong_type(key)),
    }
}

fn one_of<'a>(value: &'a str, key: &str, allowed: &[&str]) -> Result<&'a str, Invalid> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(CallError::new(
            ErrorCode::PropertyConstraintViolation,
            format!("{key} {value:?} is not one of {allowed:?}"),
        ))
    }
}

impl Charger {
    pub(super) fn on_call(&mut self, _id: &str, action: &str, p: &Value) -> Answer {
        // Checked as a central system checks a charger's CALLs (the same
        // code): the action, its direction, its payload against the schema.
        let checked = schema::check_call(Receiver::ChargePoint, action, p);
        let result = checked.and_then(|()| match action {
            "RemoteStartTransaction" => self.remote_start(p),
            "RemoteStopTransaction" => self.remote_stop(p),
            "Reset" => self.reset(p),
            "ChangeConfiguration" => self.change_configuration(p),
            "GetConfiguration" => self.get_configuration(p),
            "TriggerMessage" => self.trigger_message(p),
            "UnlockConnector" => self.unlock_connector(p),
            "ChangeAvailability" => self.change_availability(p),
            "ReserveNow" => self.reserve_now(p),
            "CancelReservation" => self.cancel_reservation(p),
            "SetChargingProfile" => self.set_charging_profile(p),
            "ClearChargingProfile" => self.clear_charging_profile(p),
            "GetCompositeSchedule" => self.get_composite_schedule(p),
            "ClearCache" => Ok(status("Accepted")),
            "DataTransfer" => self.data_transfer(p),
            "GetLocalListVersion" => Ok(ok(json!({ "listVersion": self.local_list_version }))),
            "SendLocalList" => self.send_local_list(p),
            "UpdateFirmware" => self.update_firmware(p),
            "GetDiagnostics" => self.get_diagnostics(p),
            // The security extension's commands: known, not supported here.
            a => Err(CallError::new(
                ErrorCode::NotSupported,
                format!("{a} is not supported"),
            )),
        });
        result.unwrap_or_else(|e| Answer {
            result: Err(e),
            then: Box::new(|_| {}),
        })
    }

    fn connector_arg(&self, p: &Value, key: &str) -> Result<Option<u32>, Invalid> {
        match opt_int(p, key)? {
            None => Ok(None),
            Some(c) if c < 0 => Err(CallError::new(
                ErrorCode::PropertyConstraintViolation,
                format!("{key} is negative"),
            )),
            Some(c) => Ok(Some(c as u32)),
        }
    }

    fn valid_connector(&self, c: u32) -> bool {
        c >= 1 && (c as usize) <= self.connectors.len()
    }

    // ---------------------------------------------------------------- Core

    fn remote_start(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let id_tag = req_str(p, "idTag")?.to_string();
        let wanted = self.connector_arg(p, "connectorId")?;
        let free = |c: &super::session::Connector| {
            c.is_free() && c.reservation.as_ref().is_none_or(|r| r.id_tag == id_tag)
        };
        let index = match wanted {
            Some(c) if !self.valid_connector(c) => None,
            Some(c) => Some(c as usize - 1).filter(|&i| free(&self.connectors[i])),
            // No connector given: prefer one where a vehicle is already waiting.
            None => (0..self.connectors.len())
                .filter(|&i| free(&self.connectors[i]))
                .max_by_key(|&i| (self.connectors[i].vehicle.is_some(), std::cmp::Reverse(i))),
        };
        let (Some(i), true) = (index, self.charger_operative) else {
            return Ok(status("Rejected"));
        };
        if let Some(profile) = p.get("chargingProfile") {
            match Profile::parse(i as u32 + 1, profile) {
                Ok(pr) if pr.purpose == Purpose::Tx => self.profiles.set(pr),
                _ => return Ok(status("Rejected")),
            }
        }
        Ok(ok_then(
            json!({ "status": "Accepted" }),
            move |ch: &mut Charger| {
                if ch.keys.authorize_remote_tx_requests && ch.conn.is_some() {
                    let out = Outgoing::new("Authorize", json!({ "idTag": id_tag }), ch.now())
                        .for_connector(i as u32 + 1);
                    ch.outbox.push(out);
                    return;
                }
                ch.remote_authorized(i, id_tag);
            },
        ))
    }

    fn remote_authorized(&mut self, i: usize, id_tag: String) {
        if self.connectors[i].vehicle.is_none() {
            if let Some(model) = self.cfg.auto_plug {
                let soc = self.rng.random_range(10.0..60.0);
                self.plug_in(i as u32 + 1, Vehicle::new(model, soc));
            }
        }
        self.authorized(i, id_tag);
    }

    fn remote_stop(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let id = req_int(p, "transactionId")?;
        let found = self.connectors.iter().position(|c| {
            c.tx.as_ref()
                .is_some_and(|t| self.tx_ids.get(&t.local).is_some_and(|&s| s as i64 == id))
        });
        Ok(match found {
            Some(i) => ok_then(json!({ "status": "Accepted" }), move |ch: &mut Charger| {
                ch.stop_transaction(i as u32 + 1, "Remote")
            }),
            None => status("Rejected"),
        })
    }

    fn reset(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let kind = one_of(req_str(p, "type")?, "type", &["Hard", "Soft"])?;
        let reason = if kind == "Hard" {
            "HardReset"
        } else {
            "SoftReset"
        };
        Ok(ok_then(
            json!({ "status": "Accepted" }),
            move |ch: &mut Charger| {
                for c in 1..=ch.connectors.len() as u32 {
                    ch.stop_transaction(c, reason);
                }
                // Reboot once the StopTransactions are out, or after a while regardless.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                ch.reboot_pending = Some((deadline, reason));
            },
        ))
    }

    fn change_configuration(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let key = req_str(p, "key")?.to_string();
        let value = req_str(p, "value")?;
        let result = self.keys.change(&key, value);
        if result == Change::Accepted {
            match key.as_str() {
                "HeartbeatInterval" if self.heartbeat_at.is_some() => {
                    self.heartbeat_at = Some(
                        self.cfg
                            .clock
                            .deadline_in(self.keys.heartbeat_interval.max(1) as f64),
                    );
                }
                "MeterValueSampleInterval" => {
                    let interval = self.keys.meter_value_sample_interval;
                    for c in &mut self.connectors {
                        if c.tx.is_some() {
                            c.next_sample =
                                (interval > 0).then(|| self.cfg.clock.deadline_in(interval as f64));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(status(match result {
            Change::Accepted => "Accepted",
            Change::Rejected => "Rejected",
            Change::NotSupported => "NotSupported",
        }))
    }

    fn get_configuration(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let keys = match p.get("key") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.as_slice()),
            Some(_) => return Err(wrong_type("key")),
        };
        Ok(ok(self.keys.get(keys)))
    }

    fn trigger_message(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let what = req_str(p, "requestedMessage")?.to_string();
        let connector = self.connector_arg(p, "connectorId")?;
        if connector.is_some_and(|c| c != 0 && !self.valid_connector(c)) {
            return Ok(status("Rejected"));
        }
        let supported = [
            "BootNotification",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "Heartbeat",
            "MeterValues",
            "StatusNotification",
        ];
        if !supported.contains(&what.as_str()) {
            return Ok(status("NotImplemented"));
        }
        Ok(ok_then(
            json!({ "status": "Accepted" }),
            move |ch: &mut Charger| {
                let connectors: Vec<usize> = match connector {
                    Some(c) if c > 0 => vec![c as usize - 1],
                    _ => (0..ch.connectors.len()).collect(),
                };
                match what.as_str() {
                    "BootNotification" => {
                        let payload = ch.boot_payload();
                        ch.queue("BootNotification", payload);
                    }
                    "Heartbeat" => ch.queue("Heartbeat", json!({})),
                    "FirmwareStatusNotification" => {
                        let s = ch.firmware_status;
                        ch.queue("FirmwareStatusNotification", json!({ "status": s }));
                    }
                    "DiagnosticsStatusNotification" => {
                        let s = ch.diagnostics_status;
                        ch.queue("DiagnosticsStatusNotification", json!({ "status": s }));
                    }
                    "MeterValues" => {
                        for i in connectors {
                            ch.sample(i, "Trigger");
                        }
                    }
                    _ => {
                        if connector.is_none_or(|c| c == 0) {
                            let s = ch.charger_status.clone();
                            ch.queue_status(0, &s, "NoError");
                        }
                        for i in connectors {
                            if connector.is_none_or(|c| c > 0) {
                                ch.connectors[i].reported_status = None;
                                ch.refresh_status(i);
                            }
                        }
                    }
                }
            },
        ))
    }

    fn unlock_connector(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let c = self
            .connector_arg(p, "connectorId")?
            .ok_or_else(|| missing("connectorId"))?;
        if !self.valid_connector(c) {
            return Ok(status("NotSupported"));
        }
        Ok(ok_then(
            json!({ "status": "Unlocked" }),
            move |ch: &mut Charger| {
                // Unlocking ends the transaction; the driver then takes the cable out.
                ch.stop_transaction(c, "UnlockCommand");
                ch.unplug(c);
            },
        ))
    }

    fn change_availability(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let c = self
            .connector_arg(p, "connectorId")?
            .ok_or_else(|| missing("connectorId"))?;
        let operative =
            one_of(req_str(p, "type")?, "type", &["Inoperative", "Operative"])? == "Operative";
        if c != 0 && !self.valid_connector(c) {
            return Ok(status("Rejected"));
        }
        let targets: Vec<usize> = if c == 0 {
            (0..self.connectors.len()).collect()
        } else {
            vec![c as usize - 1]
        };
        let mut scheduled = false;
        for &i in &targets {
            let conn = &mut self.connectors[i];
            if conn.tx.is_some() && !operative {
                conn.pending_operative = Some(operative);
                scheduled = true;
            } else {
                conn.operative = operative;
                conn.pending_operative = None;
            }
        }
        Ok(ok_then(
            json!({ "status": if scheduled { "Scheduled" } else { "Accepted" } }),
            move |ch: &mut Charger| {
                if c == 0 {
                    ch.charger_operative = operative || scheduled;
                    let s = if ch.charger_operative {
                        "Available"
                    } else {
                        "Unavailable"
                    };
                    ch.charger_status = s.to_string();
                    ch.queue_status(0, s, "NoError");
                }
                for i in targets {
                    ch.refresh_status(i);
                }
            },
        ))
    }

    // ---------------------------------------------------------------- Reservation

    fn reserve_now(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let c = self
            .connector_arg(p, "connectorId")?
            .ok_or_else(|| missing("connectorId"))?;
        let expiry = req_str(p, "expiryDate")?;
        let id_tag = req_str(p, "idTag")?.to_string();
        let parent = opt_str(p, "parentIdTag")?.map(str::to_string);
        let reservation_id = req_int(p, "reservationId")?;
        let expiry = parse_charger_time(expiry)
            .ok_or_else(|| wrong_type("expiryDate"))?
            .at;
        // Connector 0 reservations are optional; ReserveConnectorZeroSupported is false.
        if !self.valid_connector(c) {
            return Ok(status("Rejected"));
        }
        let remaining = (expiry - self.now()).num_milliseconds() as f64 / 1000.0;
        let i = c as usize - 1;
        let conn = &self.connectors[i];
        let answer = if conn.error_code != "NoError" {
            "Faulted"
        } else if !conn.operative || !self.charger_operative {
            "Unavailable"
        } else if conn.tx.is_some()
            || conn.vehicle.is_some()
            || conn
                .reservation
                .as_ref()
                .is_some_and(|r| r.id != reservation_id)
        {
            "Occupied"
        } else if remaining <= 0.0 {
            "Rejected"
        } else {
            "Accepted"
        };
        if answer != "Accepted" {
            return Ok(status(answer));
        }
        let expires_real = self.cfg.clock.deadline_in(remaining);
        // Another reservation with this id elsewhere is replaced by this one.
        for other in &mut self.connectors {
            if other
                .reservation
                .as_ref()
                .is_some_and(|r| r.id == reservation_id)
            {
                other.reservation = None;
            }
        }
        self.connectors[i].reservation = Some(Reservation {
            id: reservation_id,
            id_tag,
            parent_id_tag: parent,
            expires_real,
        });
        Ok(ok_then(
            json!({ "status": "Accepted" }),
            |ch: &mut Charger| {
                for i in 0..ch.connectors.len() {
                    ch.refresh_status(i);
                }
            },
        ))
    }

    fn cancel_reservation(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let id = req_int(p, "reservationId")?;
        let Some(i) = self
            .connectors
            .iter()
            .position(|c| c.reservation.as_ref().is_some_and(|r| r.id == id))
        else {
            return Ok(status("Rejected"));
        };
        self.connectors[i].reservation = None;
        Ok(ok_then(
            json!({ "status": "Accepted" }),
            move |ch: &mut Charger| ch.refresh_status(i),
        ))
    }

    // ---------------------------------------------------------------- Smart Charging

    fn set_charging_profile(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let c = self
            .connector_arg(p, "connectorId")?
            .ok_or_else(|| missing("connectorId"))?;
        let raw = p
            .get("csChargingProfiles")
            .ok_or_else(|| missing("csChargingProfiles"))?;
        if c != 0 && !self.valid_connector(c) {
            return Ok(status("Rejected"));
        }
        let profile = match Profile::parse(c, raw) {
            Ok(profile) => profile,
            Err(e) => {
                tracing::info!("charging profile rejected: {e}");
                return Ok(status("Rejected"));
            }
        };
        let acceptable = match profile.purpose {
            Purpose::ChargePointMax => c == 0,
            Purpose::TxDefault => true,
            // A TxProfile needs a transaction on that connector (OCPP 1.6 §5.16.3).
            Purpose::Tx => c != 0 && self.connectors[c as usize - 1].tx.is_some(),
        };
        if !acceptable {
            return Ok(status("Rejected"));
        }
        // Energy up to now was delivered under the old limit.
        self.advance_all();
        self.profiles.set(profile);
        // The cars draw the new limit at once (an interval of zero: no energy).
        self.advance_all();
        Ok(ok_then(
            json!({ "status": "Accepted" }),
            |ch: &mut Charger| {
                for i in 0..ch.connectors.len() {
                    ch.refresh_status(i);
                }
            },
        ))
    }

    fn clear_charging_profile(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let id = opt_int(p, "id")?;
        let connector = self.connector_arg(p, "connectorId")?;
        let purpose = match opt_str(p, "chargingProfilePurpose")? {
            None => None,
            Some("ChargePointMaxProfile") => Some(Purpose::ChargePointMax),
            Some("TxDefaultProfile") => Some(Purpose::TxDefault),
            Some("TxProfile") => Some(Purpose::Tx),
            Some(other) => {
                return Err(CallError::new(
                    ErrorCode::PropertyConstraintViolation,
                    format!("purpose {other}"),
                ))
            }
        };
        let stack = opt_int(p, "stackLevel")?;
        self.advance_all();
        let removed = self.profiles.clear(id, connector, purpose, stack);
        self.advance_all();
        Ok(ok_then(
            json!({ "status": if removed { "Accepted" } else { "Unknown" } }),
            |ch: &mut Charger| {
                for i in 0..ch.connectors.len() {
                    ch.refresh_status(i);
                }
            },
        ))
    }

    fn get_composite_schedule(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let c = self
            .connector_arg(p, "connectorId")?
            .ok_or_else(|| missing("connectorId"))?;
        let duration = req_int(p, "duration")?;
        let amps = match opt_str(p, "chargingRateUnit")? {
            Some("A") => true,
            Some("W") | None => false,
            Some(other) => {
                return Err(CallError::new(
                    ErrorCode::PropertyConstraintViolation,
                    format!("unit {other}"),
                ))
            }
        };
        if (c != 0 && !self.valid_connector(c)) || duration <= 0 {
            return Ok(status("Rejected"));
        }
        let now = self.now();
        let tx = (c > 0)
            .then(|| self.connectors[c as usize - 1].tx.as_ref())
            .flatten()
            .map(|t| TxContext {
                transaction_id: self.tx_ids.get(&t.local).map(|&i| i as i64),
                start: t.start,
            });
        let schedule = self
            .profiles
            .composite(c, now, duration, tx, self.cfg.model, amps);
        Ok(ok(json!({
            "status": "Accepted",
            "connectorId": c,
            "scheduleStart": schedule["startSchedule"].clone(),
            "chargingSchedule": schedule,
        })))
    }

    // ---------------------------------------------------------------- Data transfer, local list

    fn data_transfer(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let vendor = req_str(p, "vendorId")?;
        if vendor != self.cfg.vendor {
            return Ok(status("UnknownVendorId"));
        }
        // Our own vendor: echo the data back, which makes a handy round-trip check.
        let mut answer = json!({ "status": "Accepted" });
        if let Some(data) = opt_str(p, "data")? {
            answer["data"] = json!(data);
        }
        Ok(ok(answer))
    }

    fn send_local_list(&mut self, p: &Value) -> Result<Answer, Invalid> {
        let version = req_int(p, "listVersion")?;
        let update = one_of(
            req_str(p, "updateType")?,
            "updateType",
            &["Differential", "Full"],
        )?;
        let entries = match p.get("localAuthorizationList") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(wrong_type("localAuthorizationList")),
        };
        if !self.keys.local_auth_list_enabled {
            return Ok(status("NotSupported"));
        }
        if update == "Differential" && version <= self.local_list_version {
            return Ok(status("VersionMismatch"));
        }
        if update == "Full" {
            self.local_list.clear();
        }
        for e in &entries {
            let tag = req_str(e, "idTag")?.to_string();
            match e.pointer("/idTagInfo/status").and_then(Value::as_str) {
                Some(s) => {
                    self.local_list.insert(tag, s.to_string());
                }
                None => {
                    self.local_list.remove(&tag);
                }
            }
        }
        self.local_list_version = version;
        Ok(status("Accepted"))
    }

    // ---------------------------------------------------------------- Firmware management

    fn update_firmware(&mut self, p: &Value) -> Result<Answer, Invalid> {
        req_str(p, "location")?;
        let retrieve = parse_charger_time(req_str(p, "retrieveDate")?)
            .ok_or_else(|| wrong_type("retrieveDate"))?
            .at;
        let wait = ((retrieve - self.now()).num_milliseconds() as f64 / 1000.0).max(1.0);
        self.schedule(wait, Scheduled::FirmwareStep(0));
        Ok(ok(json!({})))
    }

    fn get_diagnostics(&mut self, p: &Value) -> Result<Answer, Invalid> {
        req_str(p, "location")?;
        let file = format!(
            "diagnostics-{}-{}.log",
            self.cfg.id,
            self.now().format("%Y%m%dT%H%M%S")
        );
        Ok(ok_then(json!({ "fileName": file }), |ch: &mut Charger| {
            ch.schedule(1.0, Scheduled::DiagnosticsStep(0))
        }))
    }

    /// Timed follow-ups: firmware update and diagnostics upload steps, reboots,
    /// and ConnectionTimeOut. There is no real download or upload; the steps
    /// report success after a few simulated seconds each.
    pub(super) async fn on_scheduled(&mut self, what: Scheduled) {
        const STEP_S: f64 = 5.0;
        match what {
            Scheduled::FirmwareStep(step) => {
                let (status, next) = match step {
                    0 => ("Downloading", Some(1)),
                    1 => ("Downloaded", Some(2)),
                    _ => ("Installing", None),
                };
                self.firmware_status = status;
                self.queue("FirmwareStatusNotification", json!({ "status": status }));
                match next {
                    Some(n) => self.schedule(STEP_S, Scheduled::FirmwareStep(n)),
                    None => {
                        self.firmware_installing = true;
                        self.schedule(STEP_S, Scheduled::Reboot { reason: "Reboot" });
                    }
                }
            }
            Scheduled::DiagnosticsStep(step) => {
                let status = if step == 0 { "Uploading" } else { "Uploaded" };
                self.diagnostics_status = status;
                self.queue("DiagnosticsStatusNotification", json!({ "status": status }));
                if step == 0 {
                    self.schedule(STEP_S, Scheduled::DiagnosticsStep(1));
                }
            }
            Scheduled::Reboot { reason } => {
                for c in 1..=self.connectors.len() as u32 {
                    self.stop_transaction(c, reason);
                }
                self.reboot(reason).await;
            }
            Scheduled::ConnectionTimeout { connector } => self.connection_timeout(connector),
        }
    }

    /// After a reboot that installed new firmware: report the new version.
    pub(super) fn finish_firmware_install(&mut self) {
        if self.firmware_installing {
            self.firmware_installing = false;
            self.firmware = format!("{}+1", self.firmware);
            self.firmware_status = "Installed";
        }
    }
}
