//! The charger side of the engine: what StartTransaction, MeterValues,
//! StopTransaction and StatusNotification do to transactions and sessions.
//!
//! Each connected charger has a [`ChargerState`], owned by its connection
//! task: its open transactions with their running figures, the session each
//! is bound to, and which sampled values are stored already. A charger's
//! messages are handled one at a time, so the state needs no lock, and a
//! MeterValues needs no database read: the engine decides in memory what
//! changes (new readings, the transaction's figures, the session's energy,
//! battery and cost, anomalies), hands it to the store as one
//! [`ChargerWrite`] committed in one transaction, and only once that commit
//! succeeded takes the new figures as its own. A failed write leaves the
//! state as it was, so a retransmission is decided again from what is
//! really stored.
//!
//! StartTransaction is the exception: whether an idTag is busy elsewhere or
//! which driver's session it belongs to is a question about every charger,
//! so the store reads those facts inside its write and [`decide_start`]
//! makes the decision there (serialized with every other write).

use super::calc::DEFAULT_BATTERY_CAPACITY_WH;
use super::meter::{self, clamp_to_arrival, Finding, Window};
use super::money;
use crate::store::*;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::{BTreeSet, HashSet};

/// Reasons a transaction is closed without its StopTransaction; a session
/// completed by one may still be corrected by the real stop.
pub const CLOSED_BY_AVAILABLE: &str = "ConnectorAvailable";
pub const CLOSED_BY_NEW_START: &str = "Superseded";

/// Stopped or closed transactions kept in memory after they end, for the
/// retransmissions and late readings that follow a stop.
const FINISHED_KEPT: usize = 4;

/// One meterValue entry as a charger sent it: a moment and its values.
#[derive(Debug, Clone)]
pub struct ReadingIn {
    pub at: DateTime<Utc>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
pub struct MeterValuesIn {
    pub connector_id: i64,
    pub transaction_id: Option<i64>,
    pub readings: Vec<ReadingIn>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct StopIn {
    pub transaction_id: i64,
    pub id_tag: Option<String>,
    pub meter_stop: i64,
    /// The charger's timestamp as sent.
    pub stop_time: DateTime<Utc>,
    pub reason: Option<String>,
    pub readings: Vec<ReadingIn>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The transaction is now stopped with these values.
    Stopped,
    /// The very same stop arrived before; nothing changed.
    Retransmission,
    /// A different stop for a stopped transaction: kept as an anomaly.
    AlreadyStopped,
    /// No such transaction (or -1): kept as an anomaly for an operator.
    UnknownTransaction,
    /// The transaction is another charger's: kept as an anomaly.
    OtherCharger,
}

struct TxState {
    record: TransactionRecord,
    session: Option<BoundSession>,
    /// Which of its sampled values are stored; loaded when first needed.
    window: Option<Window>,
}

/// What the engine knows of one connected charger.
pub struct ChargerState {
    charger_id: String,
    loaded: bool,
    /// Connectors (> 0) the charger reported in StatusNotifications.
    connectors: BTreeSet<i64>,
    txs: Vec<TxState>,
    /// Readings outside any transaction.
    loose: Option<Window>,
}

/// Anomalies as the store keeps them, for one charger.
struct Found<'a> {
    charger_id: &'a str,
    at: DateTime<Utc>,
    list: Vec<NewAnomaly>,
}

impl<'a> Found<'a> {
    fn new(charger_id: &'a str, at: DateTime<Utc>) -> Self {
        Found {
            charger_id,
            at,
            list: Vec::new(),
        }
    }

    fn add(&mut self, transaction_id: Option<i64>, (kind, detail): Finding) {
        self.list.push(anomaly(
            self.charger_id,
            transaction_id,
            kind,
            detail,
            self.at,
        ));
    }

    fn extend(&mut self, transaction_id: Option<i64>, findings: Vec<Finding>) {
        for f in findings {
            self.add(transaction_id, f);
        }
    }
}

pub fn anomaly(
    charger_id: &str,
    transaction_id: Option<i64>,
    kind: &str,
    detail: serde_json::Value,
    at: DateTime<Utc>,
) -> NewAnomaly {
    tracing::info!(charger = charger_id, transaction_id, kind, %detail, "anomaly");
    NewAnomaly {
        charger_id: charger_id.to_owned(),
        transaction_id,
        kind: kind.to_owned(),
        detail,
        occurred_at: at,
    }
}

/// What a session bound to `tx` shows: the transaction's energy priced at
/// the session's tariff, its battery, its clock (never past the arrival of
/// the message), and its end once the transaction ended.
fn progress(
    tx: &TransactionRecord,
    session: &BoundSession,
    received_at: DateTime<Utc>,
) -> SessionProgress {
    let start = tx.start_time.min(received_at);
    let end = (tx.status != TX_ACTIVE).then(|| {
        let at = tx
            .stop_time
            .unwrap_or(received_at)
            .min(received_at)
            .max(start);
        let reason = tx.stop_reason.clone().unwrap_or_else(|| "Local".into());
        (at, reason)
    });
    SessionProgress {
        session_id: session.id.clone(),
        energy_wh: tx.energy_wh,
        cost_minor: money::cost_minor(
            tx.energy_wh,
            session.price_micros,
            money::minor_digits(&session.currency),
        ),
        last_reading_at: tx.last_register_at.map(|t| t.min(received_at).max(start)),
        battery_level: tx.soc_last,
        battery_level_start: tx.soc_start,
        end,
        updated_at: Utc::now(),
    }
}

/// Closes a transaction the charger never stopped but showed to be over, at
/// its last reading's energy.
fn close(tx: &mut TransactionRecord, at: DateTime<Utc>, reason: &str, found: &mut Found<'_>) {
    tx.status = TX_CLOSED.into();
    tx.stop_time = Some(at);
    tx.stop_reason = Some(reason.into());
    tx.updated_at = Utc::now();
    found.add(
        Some(tx.id),
        (
            "closed_without_stop",
            json!({"reason": reason, "at": at, "energyWh": tx.energy_wh}),
        ),
    );
}

/// Decides a StartTransaction from what the store read inside its write.
pub fn decide_start(tx: &NewTransaction, facts: &StartFacts) -> StartPlan {
    let mut found = Found::new(&tx.charger_id, tx.received_at);
    let mut id_tag_status = tx.id_tag_status.clone();
    if id_tag_status == "Accepted" && facts.id_tag_busy {
        id_tag_status = "ConcurrentTx".into();
    }
    // A connector holds one transaction at a time: a new start on a
    // connector with one still open proves the old one over.
    let mut close_list = Vec::new();
    let mut closed_sessions = Vec::new();
    for (old, session) in &facts.open_on_connector {
        let mut old = old.clone();
        let at = tx.start_time.max(old.start_time);
        close(&mut old, at, CLOSED_BY_NEW_START, &mut found);
        let progress = session.as_ref().map(|s| {
            closed_sessions.push(s.id.clone());
            progress(&old, &BoundSession::of(s), tx.received_at)
        });
        close_list.push((old, progress));
    }
    let session_start = tx.start_time.min(tx.received_at);
    let session = match (&facts.owner, &facts.pending_session) {
        (None, _) => SessionPlan::None,
        (Some(_), Some(pending)) => {
            let mut s = pending.clone();
            s.updated_at = Utc::now();
            if id_tag_status == "Accepted" {
                s.ocpp_connector_id = Some(tx.connector_id);
                s.connector_id = format!("connector-{}", tx.connector_id);
                s.start_time = session_start;
                s.id_tag = Some(tx.id_tag.clone());
                s.remote_start_deadline = None;
                SessionPlan::Bind(s)
            } else {
                s.status = SESSION_CANCELLED.into();
                s.end_time = Some(tx.received_at.max(s.start_time));
                s.end_reason = Some(format!("StartTransaction answered {id_tag_status}"));
                SessionPlan::Cancel(s)
            }
        }
        (Some(_), None) if id_tag_status != "Accepted" => SessionPlan::None,
        (Some(owner), None) => {
            let busy = facts
                .owner_active_session
                .as_ref()
                .is_some_and(|s| !closed_sessions.contains(&s.id));
            if busy {
                found.add(
                    None,
                    (
                        "session_not_bound",
                        json!({"reason": format!("driver {owner} already has an active session"), "idTag": tx.id_tag}),
                    ),
                );
                SessionPlan::None
            } else {
                let tariff = match &facts.station {
                    Some(s) => Tariff {
                        price_micros: s.price_micros,
                        currency: s.currency.clone(),
                    },
                    None => tx.default_tariff.clone(),
                };
                let mut s = SessionRecord::begin(SessionStart {
                    user_id: owner.clone(),
                    station_id: tx.charger_id.clone(),
                    station_name: facts
                        .station
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_else(|| tx.charger_id.clone()),
                    connector_id: format!("connector-{}", tx.connector_id),
                    tariff,
                    battery_capacity_wh: facts
                        .owner_capacity_wh
                        .unwrap_or(DEFAULT_BATTERY_CAPACITY_WH),
                    start_time: session_start,
                });
                s.source = "ocpp".into();
                s.charger_id = Some(tx.charger_id.clone());
                s.ocpp_connector_id = Some(tx.connector_id);
                s.id_tag = Some(tx.id_tag.clone());
                s.energy_reported = true;
                SessionPlan::Create(s)
            }
        }
    };
    // A reservation the start names is used by it, in the same commit, when
    // it is this charger's, live, for this connector and this idTag.
    let use_reservation = match tx.reservation_id {
        None => None,
        Some(id) => {
            match super::reservations::why_not_used(tx, facts.reservation.as_ref(), &id_tag_status)
            {
                None => Some(id),
                Some(reason) => {
                    found.add(
                        None,
                        (
                            "reservation_not_used",
                            json!({"reservationId": id, "reason": reason, "idTag": tx.id_tag,
                                   "connectorId": tx.connector_id}),
                        ),
                    );
                    None
                }
            }
        }
    };
    StartPlan {
        id_tag_status,
        close: close_list,
        session,
        use_reservation,
        anomalies: found.list,
    }
}

impl ChargerState {
    pub fn new(charger_id: &str) -> Self {
        ChargerState {
            charger_id: charger_id.to_owned(),
            loaded: false,
            connectors: BTreeSet::new(),
            txs: Vec::new(),
            loose: None,
        }
    }

    pub fn charger_id(&self) -> &str {
        &self.charger_id
    }

    /// Reads the charger's open transactions (with their sessions) and its
    /// connectors, once per connection.
    async fn ensure_loaded(&mut self, store: &SharedStore) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        let mut txs = Vec::new();
        for record in store.open_transactions(&self.charger_id).await? {
            let session = store
                .session_of_transaction(record.id)
                .await?
                .filter(|s| s.status == SESSION_ACTIVE)
                .map(|s| BoundSession::of(&s));
            txs.push(TxState {
                record,
                session,
                window: None,
            });
        }
        self.txs = txs;
        self.connectors = store
            .connectors(&self.charger_id)
            .await?
            .into_iter()
            .map(|c| c.connector_id)
            .filter(|c| *c > 0)
            .collect();
        self.loaded = true;
        Ok(())
    }

    /// Notes an anomaly for a connector the charger never reported, once it
    /// has reported some (chargers announce each connector with a
    /// StatusNotification after booting).
    fn check_connector(&self, connector_id: i64, found: &mut Found<'_>, message: &str) {
        if connector_id > 0
            && !self.connectors.is_empty()
            && !self.connectors.contains(&connector_id)
        {
            found.add(
                None,
                (
                    "unknown_connector",
                    json!({"message": message, "connectorId": connector_id,
                           "knownConnectors": self.connectors.iter().collect::<Vec<_>>()}),
                ),
            );
        }
    }

    fn tx_index(&self, id: i64) -> Option<usize> {
        self.txs.iter().position(|t| t.record.id == id)
    }

    /// The charger's transaction `id`, from memory or the database; the
    /// anomaly kind when it is unknown or another charger's.
    async fn find_tx(
        &mut self,
        store: &SharedStore,
        id: i64,
    ) -> Result<std::result::Result<usize, &'static str>> {
        if let Some(i) = self.tx_index(id) {
            return Ok(Ok(i));
        }
        let Some(record) = store.transaction(id).await? else {
            return Ok(Err("unknown_transaction"));
        };
        if record.charger_id != self.charger_id {
            return Ok(Err("other_chargers_transaction"));
        }
        let session = store
            .session_of_transaction(id)
            .await?
            .map(|s| BoundSession::of(&s));
        self.keep(TxState {
            record,
            session,
            window: None,
        });
        Ok(Ok(self.txs.len() - 1))
    }

    /// Adds (or replaces) a transaction, keeping only a few finished ones.
    fn keep(&mut self, tx: TxState) {
        if let Some(i) = self.tx_index(tx.record.id) {
            self.txs.remove(i);
        }
        self.txs.push(tx);
        let finished = self
            .txs
            .iter()
            .filter(|t| t.record.status != TX_ACTIVE)
            .count();
        if finished > FINISHED_KEPT {
            if let Some(i) = self.txs.iter().position(|t| t.record.status != TX_ACTIVE) {
                self.txs.remove(i);
            }
        }
    }

    /// Splits a message's readings into the sampled values not stored yet,
    /// one [`NewReading`] per meterValue entry that has any, and their
    /// fingerprints to remember once committed.
    async fn fresh_readings(
        &mut self,
        store: &SharedStore,
        tx_index: Option<usize>,
        connector_id: i64,
        readings: &[ReadingIn],
        received_at: DateTime<Utc>,
    ) -> Result<(Vec<NewReading>, Vec<(u64, i64)>)> {
        let transaction_id = tx_index.map(|i| self.txs[i].record.id);
        // The window of what is stored, loaded from the newest readings the
        // first time this connection needs it.
        let window = match tx_index {
            Some(i) => &mut self.txs[i].window,
            None => &mut self.loose,
        };
        if window.is_none() {
            const LOAD: i64 = 32;
            let recent = store
                .recent_readings(&self.charger_id, transaction_id, LOAD)
                .await?;
            let complete = (recent.len() as i64) < LOAD;
            *window = Some(Window::from_stored(
                recent
                    .iter()
                    .flat_map(|r| r.samples.iter().map(move |s| (r.connector_id, s))),
                complete,
            ));
        }
        let window = window.as_ref().expect("loaded above");
        // Values older than the window: what is stored then, read once.
        let uncovered: Vec<DateTime<Utc>> = readings
            .iter()
            .map(|r| r.at)
            .filter(|at| !window.covers(at.timestamp_millis()))
            .collect();
        let mut older = HashSet::new();
        if let (Some(from), Some(to)) = (uncovered.iter().min(), uncovered.iter().max()) {
            for r in store
                .readings_between(&self.charger_id, transaction_id, *from, *to)
                .await?
            {
                older.extend(
                    r.samples
                        .iter()
                        .map(|s| meter::fingerprint(r.connector_id, s)),
                );
            }
        }
        let mut seen_here = HashSet::new();
        let mut fresh = Vec::new();
        let mut remember = Vec::new();
        for reading in readings {
            let at_ms = reading.at.timestamp_millis();
            let samples: Vec<Sample> = reading
                .samples
                .iter()
                .filter(|s| {
                    let fp = meter::fingerprint(connector_id, s);
                    let stored = if window.covers(at_ms) {
                        window.contains(at_ms, fp)
                    } else {
                        older.contains(&fp)
                    };
                    !stored && seen_here.insert(fp)
                })
                .cloned()
                .collect();
            if samples.is_empty() {
                continue;
            }
            remember.extend(
                samples
                    .iter()
                    .map(|s| (meter::fingerprint(connector_id, s), at_ms)),
            );
            fresh.push(NewReading {
                charger_id: self.charger_id.clone(),
                connector_id,
                transaction_id,
                sampled_at: reading.at,
                samples,
                received_at,
            });
        }
        Ok((fresh, remember))
    }

    fn remember(&mut self, tx_index: Option<usize>, fingerprints: Vec<(u64, i64)>) {
        let window = match tx_index {
            Some(i) => self.txs[i].window.as_mut(),
            None => self.loose.as_mut(),
        };
        if let Some(w) = window {
            for (fp, at) in fingerprints {
                w.remember(fp, at);
            }
        }
    }
}

impl super::Engine {
    /// MeterValues: new sampled values stored once each; a running
    /// transaction's figures and its session's energy, battery and cost
    /// updated in the same commit. Readings of a stopped transaction
    /// timestamped after its stop are kept and flagged, never billed.
    pub async fn meter_values(
        &self,
        state: &mut ChargerState,
        input: MeterValuesIn,
        mut found_before: Vec<NewAnomaly>,
    ) -> Result<()> {
        let store = &self.store;
        state.ensure_loaded(store).await?;
        let charger_id = state.charger_id.clone();
        let mut found = Found::new(&charger_id, input.received_at);
        found.list.append(&mut found_before);
        state.check_connector(input.connector_id, &mut found, "MeterValues");
        let target = match input.transaction_id {
            None => None,
            Some(id) => match state.find_tx(store, id).await? {
                Ok(i) => Some(i),
                Err(kind) => {
                    found.add(
                        None,
                        (
                            kind,
                            json!({"message": "MeterValues", "transactionId": id, "connectorId": input.connector_id}),
                        ),
                    );
                    None
                }
            },
        };
        let (readings, remember) = state
            .fresh_readings(
                store,
                target,
                input.connector_id,
                &input.readings,
                input.received_at,
            )
            .await?;
        let mut write = ChargerWrite::new(&charger_id);
        let mut updated = None;
        if let Some(i) = target.filter(|_| !readings.is_empty()) {
            let tx = &state.txs[i];
            let id = tx.record.id;
            let samples: Vec<&Sample> = readings.iter().flat_map(|r| &r.samples).collect();
            if tx.record.status == TX_ACTIVE {
                let mut record = tx.record.clone();
                found.extend(
                    Some(id),
                    meter::fold(&mut record, &samples, input.received_at),
                );
                record.updated_at = Utc::now();
                if let Some(session) = &tx.session {
                    write
                        .sessions
                        .push(progress(&record, session, input.received_at));
                }
                write.transactions.push(record.clone());
                updated = Some((i, record));
            } else if let Some(stop) = tx.record.stop_time {
                flag_after_stop(&samples, stop, id, &mut found);
            }
        }
        write.readings = readings;
        write.anomalies = found.list;
        if !write.is_empty() {
            self.commit(write).await?;
        }
        if let Some((i, record)) = updated {
            if let Some(power_w) = record.power_w_last {
                self.site_power(&charger_id, record.id, power_w);
            }
            state.txs[i].record = record;
        }
        state.remember(target, remember);
        Ok(())
    }

    /// StopTransaction: the transaction stops with the charger's own figures
    /// (energy = meterStop − meterStart) and its session completes, in one
    /// commit. A stop for an unknown or another charger's transaction, or a
    /// second stop with other values, changes nothing and is kept as an
    /// anomaly.
    pub async fn stop_transaction(
        &self,
        state: &mut ChargerState,
        input: StopIn,
        mut found_before: Vec<NewAnomaly>,
    ) -> Result<StopOutcome> {
        let store = &self.store;
        state.ensure_loaded(store).await?;
        let charger_id = state.charger_id.clone();
        let mut found = Found::new(&charger_id, input.received_at);
        found.list.append(&mut found_before);
        let reason = input.reason.clone().unwrap_or_else(|| "Local".into());
        let detail = || {
            json!({
                "transactionId": input.transaction_id, "meterStop": input.meter_stop,
                "timestamp": input.stop_time, "reason": reason, "idTag": input.id_tag,
                "samples": input.readings.iter().map(|r| r.samples.len()).sum::<usize>()
            })
        };
        let i = match state.find_tx(store, input.transaction_id).await? {
            Ok(i) => i,
            Err(kind) => {
                // Kept whole (with its samples) for an operator to see.
                let (readings, remember) = state
                    .fresh_readings(store, None, 0, &input.readings, input.received_at)
                    .await?;
                found.add(
                    None,
                    (
                        if kind == "unknown_transaction" {
                            "stop_unknown_transaction"
                        } else {
                            "stop_other_chargers_transaction"
                        },
                        detail(),
                    ),
                );
                let mut write = ChargerWrite::new(&charger_id);
                write.readings = readings;
                write.anomalies = found.list;
                self.commit(write).await?;
                state.remember(None, remember);
                return Ok(if kind == "unknown_transaction" {
                    StopOutcome::UnknownTransaction
                } else {
                    StopOutcome::OtherCharger
                });
            }
        };
        let connector_id = state.txs[i].record.connector_id;
        let (readings, remember) = state
            .fresh_readings(
                store,
                Some(i),
                connector_id,
                &input.readings,
                input.received_at,
            )
            .await?;
        let mut write = ChargerWrite::new(&charger_id);
        let tx = &state.txs[i];
        let id = tx.record.id;
        let samples: Vec<&Sample> = readings.iter().flat_map(|r| &r.samples).collect();
        if tx.record.status == TX_STOPPED {
            let outcome = if tx.record.meter_stop == Some(input.meter_stop)
                && tx.record.stop_time == Some(input.stop_time)
            {
                StopOutcome::Retransmission
            } else {
                found.add(Some(id), ("second_stop", detail()));
                StopOutcome::AlreadyStopped
            };
            write.readings = readings;
            write.anomalies = found.list;
            if !write.is_empty() {
                self.commit(write).await?;
            }
            state.remember(Some(i), remember);
            return Ok(outcome);
        }

        let was_closed = tx.record.status == TX_CLOSED;
        let mut record = tx.record.clone();
        let stop_at = clamp_to_arrival(input.stop_time, input.received_at, &mut Vec::new());
        if input.stop_time > input.received_at + meter::FUTURE_TOLERANCE {
            found.add(
                Some(id),
                (
                    "timestamp_in_future",
                    json!({"timestamp": input.stop_time, "receivedAt": input.received_at, "message": "StopTransaction"}),
                ),
            );
        }
        // transactionData up to the stop tells the battery and power; what
        // was sampled after it is kept and flagged, never billed.
        let (before, after): (Vec<&Sample>, Vec<&Sample>) = samples
            .iter()
            .partition(|s| s.sampled_at <= input.stop_time);
        if !was_closed {
            found.extend(
                Some(id),
                meter::fold(&mut record, &before, input.received_at),
            );
        }
        flag_after_stop(&after, input.stop_time, id, &mut found);
        if let Some(last_at) = record.last_register_at.filter(|at| *at > stop_at) {
            found.add(
                Some(id),
                (
                    "readings_after_stop",
                    json!({"stopTime": input.stop_time, "lastRegisterAt": last_at, "lastRegisterWh": record.last_register_wh}),
                ),
            );
        } else if let Some(last) = record.last_register_wh {
            if last - input.meter_stop as f64 >= meter::REGISTER_RESOLUTION_WH {
                found.add(
                    Some(id),
                    (
                        "meter_stop_below_register",
                        json!({"meterStop": input.meter_stop, "lastRegisterWh": last}),
                    ),
                );
            }
        }
        if record.meter_start - input.meter_stop >= 1 {
            found.add(
                Some(id),
                (
                    "meter_stop_below_meter_start",
                    json!({"meterStart": record.meter_start, "meterStop": input.meter_stop}),
                ),
            );
        }
        if input.stop_time < record.start_time {
            found.add(
                Some(id),
                (
                    "stop_before_start",
                    json!({"start": record.start_time, "stop": input.stop_time}),
                ),
            );
        }
        // The charger's own final figure is the energy.
        record.status = TX_STOPPED.into();
        record.meter_stop = Some(input.meter_stop);
        record.stop_time = Some(input.stop_time);
        record.stop_reason = Some(reason.clone());
        record.stop_id_tag = input.id_tag.clone();
        record.energy_wh = meter::final_energy_wh(record.meter_start, input.meter_stop);
        record.last_register_wh = Some(input.meter_stop as f64);
        record.last_register_at = Some(stop_at);
        record.updated_at = Utc::now();
        if let Some(session) = &tx.session {
            let p = progress(&record, session, input.received_at);
            if was_closed {
                write.corrections.push(p);
            } else {
                write.sessions.push(p);
            }
        }
        write.transactions.push(record.clone());
        write.readings = readings;
        write.anomalies = found.list;
        self.commit(write).await?;
        state.txs[i].record = record;
        state.remember(Some(i), remember);
        let finished = state.txs.remove(i);
        self.site_car_stopped(&charger_id, finished.record.id);
        state.keep(finished);
        Ok(StopOutcome::Stopped)
    }

    /// StatusNotification: the connector's status is kept; a connector shown
    /// Available while a transaction is still open on it closes that
    /// transaction (its StopTransaction was lost) and completes its session.
    /// Returns the ids of the transactions closed.
    pub async fn connector_status(
        &self,
        state: &mut ChargerState,
        status: ConnectorStatus,
        mut found_before: Vec<NewAnomaly>,
    ) -> Result<Vec<i64>> {
        let store = &self.store;
        state.ensure_loaded(store).await?;
        let charger_id = state.charger_id.clone();
        let received_at = status.updated_at;
        let mut found = Found::new(&charger_id, received_at);
        found.list.append(&mut found_before);
        let connector_id = status.connector_id;
        // A connector far beyond those reported (99 on a two-connector
        // charger) is not a new one.
        if connector_id > 0
            && state
                .connectors
                .last()
                .is_some_and(|max| connector_id > max + 1)
        {
            state.check_connector(connector_id, &mut found, "StatusNotification");
        }
        let mut write = ChargerWrite::new(&charger_id);
        let mut closed = Vec::new();
        if status.status == "Available" && connector_id > 0 {
            let at = status.status_at.min(received_at);
            for (i, tx) in state.txs.iter().enumerate() {
                if tx.record.status == TX_ACTIVE
                    && tx.record.connector_id == connector_id
                    && tx.record.start_time <= status.status_at
                {
                    let mut record = tx.record.clone();
                    close(&mut record, at, CLOSED_BY_AVAILABLE, &mut found);
                    if let Some(session) = &tx.session {
                        write.sessions.push(progress(&record, session, received_at));
                    }
                    write.transactions.push(record.clone());
                    closed.push((i, record));
                }
            }
        }
        write.seen = Some(received_at);
        write.connector = Some(status);
        write.anomalies = found.list;
        self.commit(write).await?;
        if connector_id > 0 {
            state.connectors.insert(connector_id);
        }
        let ids: Vec<i64> = closed.iter().map(|(_, r)| r.id).collect();
        for id in &ids {
            self.site_car_stopped(&charger_id, *id);
        }
        for (i, record) in closed {
            state.txs[i].record = record;
        }
        Ok(ids)
    }

    /// StartTransaction: stored, with the engine's decision on the idTag
    /// (ConcurrentTx), the transactions it closes and the session it belongs
    /// to made inside the store's write.
    pub async fn start_transaction(
        &self,
        state: &mut ChargerState,
        mut tx: NewTransaction,
    ) -> Result<StartOutcome> {
        let store = &self.store;
        state.ensure_loaded(store).await?;
        let charger_id = state.charger_id.clone();
        let mut found = Found::new(&charger_id, tx.received_at);
        if tx.connector_id <= 0 {
            found.add(
                None,
                (
                    "start_on_connector_0",
                    json!({"connectorId": tx.connector_id}),
                ),
            );
        }
        state.check_connector(tx.connector_id, &mut found, "StartTransaction");
        if tx.start_time > tx.received_at + meter::FUTURE_TOLERANCE {
            found.add(
                None,
                (
                    "timestamp_in_future",
                    json!({"timestamp": tx.start_time, "receivedAt": tx.received_at, "message": "StartTransaction"}),
                ),
            );
        }
        tx.anomalies.append(&mut found.list);
        let anomalies = if self.events.listened() {
            tx.anomalies.clone()
        } else {
            Vec::new()
        };
        let outcome = store.start_transaction(tx, decide_start).await?;
        if self.events.listened() && !outcome.retransmission {
            // The session now bound to the transaction, and those of the
            // transactions this start closed.
            let mut changed: Vec<String> = outcome.session.iter().map(|s| s.id.clone()).collect();
            for closed in &outcome.closed {
                if let Some(s) = state
                    .tx_index(closed.id)
                    .and_then(|i| state.txs[i].session.as_ref())
                {
                    changed.push(s.id.clone());
                }
            }
            self.publish_sessions(&changed).await;
            self.publish_anomalies(&anomalies);
        }
        for closed in &outcome.closed {
            if let Some(i) = state.tx_index(closed.id) {
                state.txs[i].record = closed.clone();
            }
            self.site_car_stopped(&charger_id, closed.id);
        }
        if !outcome.retransmission && outcome.id_tag_status == "Accepted" {
            self.site_car_started(&outcome.transaction);
        }
        let window = (!outcome.retransmission).then(Window::empty);
        state.keep(TxState {
            record: outcome.transaction.clone(),
            session: outcome.session.clone(),
            window,
        });
        Ok(outcome)
    }

    /// Commits a charger's write, then tells listeners what it changed:
    /// its sessions, its connector's status, the anomalies it found.
    async fn commit(&self, write: ChargerWrite) -> Result<()> {
        if !self.events.listened() {
            return self.store.apply(write).await;
        }
        let sessions: Vec<String> = write
            .sessions
            .iter()
            .chain(&write.corrections)
            .map(|p| p.session_id.clone())
            .collect();
        let anomalies = write.anomalies.clone();
        let connector = write.connector.clone();
        let heartbeat = write.heartbeat.map(|at| (write.charger_id.clone(), at));
        self.store.apply(write).await?;
        self.publish_sessions(&sessions).await;
        if let Some((charger_id, at)) = heartbeat {
            self.events.publish(
                "charger.heartbeat",
                None,
                json!({ "chargerId": charger_id, "at": crate::ocpp::time::format_ms(at) }),
            );
        }
        if let Some(c) = connector {
            self.events.publish(
                "connector.status",
                None,
                json!({
                    "chargerId": c.charger_id, "connectorId": c.connector_id,
                    "status": c.status, "errorCode": c.error_code, "info": c.info,
                    "timestamp": c.status_at,
                }),
            );
        }
        self.publish_anomalies(&anomalies);
        Ok(())
    }

    fn publish_anomalies(&self, anomalies: &[NewAnomaly]) {
        for a in anomalies {
            self.events.publish(
                "anomaly",
                None,
                json!({
                    "chargerId": a.charger_id, "transactionId": a.transaction_id,
                    "kind": a.kind, "detail": a.detail, "occurredAt": a.occurred_at,
                }),
            );
        }
    }

    /// Any other message that proves the charger alive (a heartbeat, a
    /// notification), with the anomalies its handler found.
    pub async fn charger_alive(
        &self,
        charger_id: &str,
        at: DateTime<Utc>,
        anomalies: Vec<NewAnomaly>,
    ) -> Result<()> {
        let mut write = ChargerWrite::new(charger_id);
        write.heartbeat = Some(at);
        write.anomalies = anomalies;
        self.commit(write).await
    }

    /// The charger was last heard from at `at` (it disconnected).
    pub async fn charger_seen(&self, charger_id: &str, at: DateTime<Utc>) -> Result<()> {
        let mut write = ChargerWrite::new(charger_id);
        write.seen = Some(at);
        self.commit(write).await
    }
}

/// Readings of a transaction sampled after its stop: kept, flagged once per
/// message, never billed.
fn flag_after_stop(samples: &[&Sample], stop: DateTime<Utc>, id: i64, found: &mut Found<'_>) {
    let after: Vec<DateTime<Utc>> = samples
        .iter()
        .map(|s| s.sampled_at)
        .filter(|at| *at > stop)
        .collect();
    if let (Some(first), Some(last)) = (after.iter().min(), after.iter().max()) {
        found.add(
            Some(id),
            (
                "readings_after_stop",
                json!({"stopTime": stop, "count": after.len(), "first": first, "last": last}),
            ),
        );
    }
}
