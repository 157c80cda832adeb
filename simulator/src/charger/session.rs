//! Connectors, vehicles and transactions (OCPP 1.6 §4.3–4.10, §5): what happens
//! when a driver plugs in, presents a card, charges and leaves, and the
//! StatusNotification, Authorize, StartTransaction, MeterValues and
//! StopTransaction messages that follow from it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::outbox::Outgoing;
use super::smart_charging::TxContext;
use super::{Charger, ConnectorView, Scheduled};
use crate::summary::SessionRecord;
use crate::vehicle::{Meter, Vehicle};
use ocpp_j::time::format_ms;

pub(super) struct Connector {
    pub id: u32,
    pub vehicle: Option<Vehicle>,
    pub meter: Meter,
    pub tx: Option<ActiveTx>,
    /// The last status sent to the server.
    pub reported_status: Option<String>,
    pub error_code: String,
    pub operative: bool,
    /// A ChangeAvailability that waits for the running transaction to end.
    pub pending_operative: Option<bool>,
    pub reservation: Option<Reservation>,
    /// An idTag accepted before the vehicle was plugged in.
    pub authorized: Option<String>,
    /// A transaction stopped while the cable is still in: `Finishing` until unplugged.
    pub finishing: bool,
    pub power_w: f64,
    /// Simulated time up to which physics has been integrated.
    pub last_physics: Option<DateTime<Utc>>,
    pub next_sample: Option<Instant>,
}

pub(super) struct ActiveTx {
    pub local: u64,
    pub id_tag: String,
    pub meter_start: i64,
    pub start: DateTime<Utc>,
    pub soc_start: Option<f64>,
    pub delivered_wh: f64,
    pub faults: Vec<String>,
    /// The sampled values at the start, repeated in StopTransaction.transactionData.
    pub begin_values: Value,
}

/// A transaction the charger has stopped, until the server acknowledges its StopTransaction.
pub(super) struct FinishedTx {
    pub connector: u32,
    pub id_tag: String,
    pub meter_start: i64,
    pub meter_stop: i64,
    pub start: String,
    pub stop: String,
    pub reason: String,
    pub soc_start: Option<f64>,
    pub soc_end: Option<f64>,
    pub delivered_wh: f64,
    pub faults: Vec<String>,
}

pub(super) struct Reservation {
    pub id: i64,
    pub id_tag: String,
    pub parent_id_tag: Option<String>,
    pub expires_real: Instant,
}

impl Connector {
    pub fn new(id: u32, register_wh: u64) -> Self {
        Connector {
            id,
            vehicle: None,
            meter: Meter::new(register_wh),
            tx: None,
            reported_status: None,
            error_code: "NoError".into(),
            operative: true,
            pending_operative: None,
            reservation: None,
            authorized: None,
            finishing: false,
            power_w: 0.0,
            last_physics: None,
            next_sample: None,
        }
    }

    pub fn view(&self, tx_ids: &HashMap<u64, i32>) -> ConnectorView {
        ConnectorView {
            id: self.id,
            status: self.reported_status.clone().unwrap_or_default(),
            plugged: self.vehicle.is_some(),
            in_transaction: self.tx.is_some(),
            transaction_id: self.tx.as_ref().and_then(|t| tx_ids.get(&t.local).copied()),
            soc: self.vehicle.as_ref().map(Vehicle::soc),
            power_w: self.power_w,
            register_wh: self.meter.reading_wh(),
        }
    }

    /// Whether a new transaction could start here.
    pub fn is_free(&self) -> bool {
        self.tx.is_none() && self.operative && self.error_code == "NoError" && !self.finishing
    }
}

impl Charger {
    fn index(&self, connector: u32) -> Option<usize> {
        let i = connector.checked_sub(1)? as usize;
        (i < self.connectors.len()).then_some(i)
    }

    // ---------------------------------------------------------------- status

    /// The status OCPP 1.6 §4.9 prescribes for the connector's present state.
    fn status_of(&self, i: usize) -> &'static str {
        let c = &self.connectors[i];
        if c.error_code != "NoError" {
            "Faulted"
        } else if c.tx.is_some() {
            if c.vehicle.as_ref().is_some_and(Vehicle::is_full) {
                "SuspendedEV"
            } else if self.limit_w(i) <= 0.0 {
                "SuspendedEVSE"
            } else {
                "Charging"
            }
        } else if !c.operative || !self.charger_operative {
            "Unavailable"
        } else if c.finishing {
            "Finishing"
        } else if c.reservation.is_some() {
            "Reserved"
        } else if c.vehicle.is_some() || c.authorized.is_some() {
            "Preparing"
        } else {
            "Available"
        }
    }

    /// Sends a StatusNotification if the connector's status changed.
    pub(super) fn refresh_status(&mut self, i: usize) {
        let status = self.status_of(i);
        if self.connectors[i].reported_status.as_deref() != Some(status) {
            self.connectors[i].reported_status = Some(status.to_string());
            let (id, code) = (self.connectors[i].id, self.connectors[i].error_code.clone());
            self.queue_status(id, status, &code);
        }
    }

    pub(super) fn queue_status(&mut self, connector: u32, status: &str, error_code: &str) {
        let payload = json!({
            "connectorId": connector,
            "errorCode": error_code,
            "status": status,
            "timestamp": self.now_ts(),
        });
        self.queue("StatusNotification", payload);
    }

    pub(super) fn set_fault(&mut self, connector: u32, error_code: String) {
        if connector == 0 {
            let status = if error_code == "NoError" {
                "Available"
            } else {
                "Faulted"
            };
            self.charger_status = status.to_string();
            self.queue_status(0, status, &error_code);
            return;
        }
        let Some(i) = self.index(connector) else {
            return;
        };
        if error_code != "NoError" && self.connectors[i].tx.is_some() {
            self.stop_transaction(connector, "Other");
        }
        self.connectors[i].error_code = error_code;
        self.refresh_status(i);
    }

    // ---------------------------------------------------------------- driver actions

    pub(super) fn plug_in(&mut self, connector: u32, vehicle: Vehicle) {
        let Some(i) = self.index(connector) else {
            return;
        };
        let c = &mut self.connectors[i];
        if c.vehicle.is_some() {
            return;
        }
        c.vehicle = Some(vehicle);
        c.finishing = false;
        match c.authorized.take() {
            Some(tag) if c.is_free() => self.start_transaction(i, tag),
            _ => self.refresh_status(i),
        }
    }

    pub(super) fn unplug(&mut self, connector: u32) {
        let Some(i) = self.index(connector) else {
            return;
        };
        if self.connectors[i].tx.is_some() {
            self.stop_transaction(connector, "EVDisconnected");
        }
        let c = &mut self.connectors[i];
        c.vehicle = None;
        c.finishing = false;
        c.authorized = None;
        self.refresh_status(i);
    }

    /// A card at the reader: stops the transaction it started, or authorizes a new one.
    pub(super) fn present_id_tag(&mut self, connector: u32, id_tag: String) {
        let Some(i) = self.index(connector) else {
            return;
        };
        let c = &self.connectors[i];
        if let Some(tx) = &c.tx {
            if tx.id_tag == id_tag {
                self.stop_transaction(connector, "Local");
            }
            return;
        }
        if !c.is_free() {
            return;
        }
        if let Some(r) = &c.reservation {
            if r.id_tag != id_tag && r.parent_id_tag.as_deref() != Some(id_tag.as_str()) {
                tracing::info!("connector {connector} is reserved for another idTag");
                return;
            }
        }
        let in_local_list = self.keys.local_auth_list_enabled
            && self
                .local_list
                .get(&id_tag)
                .is_some_and(|s| s == "Accepted");
        if self.conn.is_none() || (self.keys.local_pre_authorize && in_local_list) {
            // Offline (or pre-authorized from the local list): the charger decides by itself.
            self.authorized(i, id_tag);
        } else {
            let out = Outgoing::new("Authorize", json!({ "idTag": id_tag }), self.now())
                .for_connector(connector);
            self.outbox.push(out);
        }
    }

    pub(super) fn on_authorize_result(&mut self, out: &Outgoing, payload: &Value) {
        let (Some(connector), Some(tag)) = (out.connector, out.payload["idTag"].as_str()) else {
            return;
        };
        let Some(i) = self.index(connector) else {
            return;
        };
        match payload.pointer("/idTagInfo/status").and_then(Value::as_str) {
            Some("Accepted") => self.authorized(i, tag.to_string()),
            status => tracing::info!("idTag {tag} not accepted: {status:?}"),
        }
    }

    /// An idTag may charge here: start now if a vehicle is plugged in, else wait for one.
    pub(super) fn authorized(&mut self, i: usize, id_tag: String) {
        let c = &mut self.connectors[i];
        if !c.is_free() {
            return;
        }
        if c.vehicle.is_some() {
            self.start_transaction(i, id_tag);
        } else {
            c.authorized = Some(id_tag);
            let timeout = self.keys.connection_timeout as f64;
            self.schedule(
                timeout,
                Scheduled::ConnectionTimeout {
                    connector: i as u32 + 1,
                },
            );
            self.refresh_status(i);
        }
    }

    /// ConnectionTimeOut passed with no vehicle: the authorization lapses.
    pub(super) fn connection_timeout(&mut self, connector: u32) {
        let Some(i) = self.index(connector) else {
            return;
        };
        let c = &mut self.connectors[i];
        if c.vehicle.is_none() && c.authorized.take().is_some() {
            self.refresh_status(i);
        }
    }

    // ---------------------------------------------------------------- transactions

    fn start_transaction(&mut self, i: usize, id_tag: String) {
        // A charger that is shutting down starts nothing new: an Authorize
        // answered after the shutdown began would otherwise open a
        // transaction nobody is left to stop.
        if self.shutdown_deadline.is_some() {
            tracing::debug!(connector = i + 1, "shutting down: no new transaction");
            self.connectors[i].authorized = None;
            return;
        }
        let local = self.next_local_tx;
        self.next_local_tx += 1;
        let now = self.now();
        let begin_values = self.sampled_values(i, "Transaction.Begin");
        let interval = self.keys.meter_value_sample_interval;
        let c = &mut self.connectors[i];
        c.authorized = None;
        c.last_physics = Some(self.cfg.clock.now());
        let meter_start = c.meter.reading_wh();
        let reservation = c.reservation.take();
        c.tx = Some(ActiveTx {
            local,
            id_tag: id_tag.clone(),
            meter_start,
            start: now,
            soc_start: c.vehicle.as_ref().map(Vehicle::soc),
            delivered_wh: 0.0,
            faults: Vec::new(),
            begin_values,
        });
        c.next_sample = (interval > 0).then(|| self.cfg.clock.deadline_in(interval as f64));
        let mut payload = json!({
            "connectorId": c.id,
            "idTag": id_tag,
            "meterStart": meter_start,
            "timestamp": format_ms(now),
        });
        if let Some(r) = reservation {
            payload["reservationId"] = json!(r.id);
        }
        self.outbox
            .push(Outgoing::new("StartTransaction", payload, now).for_tx(local));
        self.rec
            .stats
            .sessions_started
            .fetch_add(1, Ordering::Relaxed);
        self.rec
            .stats
            .active_sessions
            .fetch_add(1, Ordering::Relaxed);
        self.refresh_status(i);
    }

    pub(super) fn on_start_result(&mut self, out: &Outgoing, payload: &Value) {
        let Some(local) = out.tx else { return };
        let id = payload
            .get("transactionId")
            .and_then(Value::as_i64)
            .unwrap_or(-1) as i32;
        self.tx_ids.insert(local, id);
        let status = payload
            .pointer("/idTagInfo/status")
            .and_then(Value::as_str)
            .unwrap_or("Invalid");
        if status != "Accepted" {
            // The server refused the idTag after the fact: stop charging (OCPP 1.6 §5.11).
            if let Some(i) = self
                .connectors
                .iter()
                .position(|c| c.tx.as_ref().is_some_and(|t| t.local == local))
            {
                tracing::info!("transaction {id} not accepted ({status}), stopping");
                self.stop_transaction(i as u32 + 1, "DeAuthorized");
            }
        }
    }

    /// Ends the connector's transaction, if any, and queues its StopTransaction.
    pub(super) fn stop_transaction(&mut self, connector: u32, reason: &str) {
        let Some(i) = self.index(connector) else {
            return;
        };
        if self.connectors[i].tx.is_none() {
            return;
        }
        self.advance(i);
        let now = self.now();
        let end_values = self.sampled_values(i, "Transaction.End");
        let c = &mut self.connectors[i];
        let tx = c.tx.take().unwrap();
        let meter_stop = c.meter.reading_wh();
        c.next_sample = None;
        c.power_w = 0.0;
        c.finishing = c.vehicle.is_some();
        let stop_ts = format_ms(now);
        let payload = json!({
            "idTag": tx.id_tag,
            "meterStop": meter_stop,
            "timestamp": stop_ts,
            "reason": reason,
            "transactionData": [
                { "timestamp": format_ms(tx.start), "sampledValue": tx.begin_values },
                { "timestamp": stop_ts, "sampledValue": end_values },
            ],
        });
        self.finishing.insert(
            tx.local,
            FinishedTx {
                connector,
                id_tag: tx.id_tag,
                meter_start: tx.meter_start,
                meter_stop,
                start: format_ms(tx.start),
                stop: stop_ts,
                reason: reason.to_string(),
                soc_start: tx.soc_start,
                soc_end: c.vehicle.as_ref().map(Vehicle::soc),
                delivered_wh: tx.delivered_wh,
                faults: tx.faults,
            },
        );
        if let Some(op) = c.pending_operative.take() {
            c.operative = op;
        }
        self.outbox
            .push(Outgoing::new("StopTransaction", payload, now).for_tx(tx.local));
        self.profiles.end_transaction(connector);
        self.rec
            .stats
            .active_sessions
            .fetch_sub(1, Ordering::Relaxed);
        self.refresh_status(i);
    }

    /// The server acknowledged a StopTransaction: the session is complete.
    pub(super) fn finish_record(&mut self, local: u64) {
        let Some(f) = self.finishing.remove(&local) else {
            return;
        };
        let transaction_id = self.tx_ids.remove(&local).unwrap_or(-1);
        self.sessions_finished += 1;
        self.rec.record_session(SessionRecord {
            charger_id: self.cfg.id.clone(),
            connector_id: f.connector,
            transaction_id,
            id_tag: f.id_tag,
            meter_start: f.meter_start,
            meter_stop: f.meter_stop,
            energy_wh: f.meter_stop - f.meter_start,
            delivered_wh: f.delivered_wh.floor() as i64,
            start_time: f.start,
            stop_time: f.stop,
            stop_reason: f.reason,
            soc_start: f.soc_start.map(round1),
            soc_end: f.soc_end.map(round1),
            faults: f.faults,
        });
    }

    pub(super) fn note_fault(&mut self, local: Option<u64>, fault: &str) {
        let Some(local) = local else { return };
        let push = |faults: &mut Vec<String>| {
            if !faults.iter().any(|f| f == fault) {
                faults.push(fault.to_string());
            }
        };
        if let Some(tx) = self
            .connectors
            .iter_mut()
            .filter_map(|c| c.tx.as_mut())
            .find(|t| t.local == local)
        {
            push(&mut tx.faults);
        } else if let Some(f) = self.finishing.get_mut(&local) {
            push(&mut f.faults);
        }
    }

    pub(super) fn reset_meter(&mut self, connector: u32) {
        let Some(i) = self.index(connector) else {
            return;
        };
        self.advance(i);
        let c = &mut self.connectors[i];
        c.meter.reset();
        if let Some(tx) = c.tx.as_mut() {
            tx.faults.push("meter-reset".into());
        }
    }

    // ---------------------------------------------------------------- physics and meter values

    /// The power limit (W) on connector index `i` right now.
    pub(super) fn limit_w(&self, i: usize) -> f64 {
        let c = &self.connectors[i];
        let tx = c.tx.as_ref().map(|t| TxContext {
            transaction_id: self.tx_ids.get(&t.local).map(|&id| id as i64),
            start: t.start,
        });
        self.profiles.limit_w(
            c.id,
            self.now(),
            tx,
            self.cfg.model.kind,
            self.cfg.model.max_power_w,
        )
    }

    /// Integrates the connector's charging up to now.
    pub(super) fn advance(&mut self, i: usize) {
        let now = self.cfg.clock.now();
        let limit = self.limit_w(i);
        let kind = self.cfg.model.kind;
        let c = &mut self.connectors[i];
        let dt = c
            .last_physics
            .map(|t| (now - t).num_microseconds().unwrap_or(0) as f64 / 1e6)
            .unwrap_or(0.0);
        c.last_physics = Some(now);
        match (c.tx.as_mut(), c.vehicle.as_mut()) {
            (Some(tx), Some(v)) => {
                let (energy, power) = v.charge(limit, kind, dt);
                c.meter.add(energy);
                tx.delivered_wh += energy;
                c.power_w = power;
            }
            _ => c.power_w = 0.0,
        }
    }

    pub(super) fn advance_all(&mut self) {
        for i in 0..self.connectors.len() {
            self.advance(i);
        }
    }

    /// The measurands this charger reports (MeterValuesSampledData).
    fn sampled_values(&self, i: usize, context: &str) -> Value {
        let c = &self.connectors[i];
        let kind = self.cfg.model.kind;
        let sv = |value: String, measurand: &str, unit: &str, location: &str| json!({ "value": value, "context": context, "measurand": measurand, "unit": unit, "location": location });
        let mut values = vec![
            sv(
                c.meter.reading_wh().to_string(),
                "Energy.Active.Import.Register",
                "Wh",
                "Outlet",
            ),
            sv(
                format!("{:.0}", c.power_w),
                "Power.Active.Import",
                "W",
                "Outlet",
            ),
            sv(
                format!("{:.1}", kind.current_a(c.power_w)),
                "Current.Import",
                "A",
                "Outlet",
            ),
            sv(format!("{:.1}", kind.voltage()), "Voltage", "V", "Outlet"),
        ];
        if let Some(v) = &c.vehicle {
            values.push(sv(
                format!("{:.0}", v.soc().floor()),
                "SoC",
                "Percent",
                "EV",
            ));
        }
        Value::Array(values)
    }

    /// Takes a meter sample on connector index `i` and queues MeterValues.
    /// Periodic samples are only taken during a transaction and schedule the next one.
    pub(super) fn sample(&mut self, i: usize, context: &str) {
        self.advance(i);
        let periodic = context == "Sample.Periodic";
        if periodic {
            let interval = self.keys.meter_value_sample_interval;
            self.connectors[i].next_sample = (interval > 0 && self.connectors[i].tx.is_some())
                .then(|| self.cfg.clock.deadline_in(interval as f64));
        }
        let local = self.connectors[i].tx.as_ref().map(|t| t.local);
        if periodic && local.is_none() {
            return;
        }
        let now = self.now();
        let payload = json!({
            "connectorId": self.connectors[i].id,
            "meterValue": [{ "timestamp": format_ms(now), "sampledValue": self.sampled_values(i, context) }],
        });
        let mut out = Outgoing::new("MeterValues", payload, now);
        out.tx = local;
        self.outbox.push(out);
        // A battery that just filled up suspends the session.
        self.refresh_status(i);
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
