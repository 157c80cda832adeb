//! The SQL behind [`Store`], written once and compiled for both SQLite and
//! PostgreSQL.
//!
//! The two schemas (`migrations/sqlite`, `migrations/postgres`) differ only in
//! column types, and every statement here is valid on both (`$n` placeholders,
//! `ON CONFLICT`, `RETURNING`), so one macro instantiates the same code for
//! each database's concrete sqlx types instead of keeping two copies in step.
//! Placeholders must first appear in increasing order: SQLite numbers `$n`
//! parameters by first appearance.
//! Times are compared in Rust, never in SQL, because SQLite keeps them as text.

use super::batch::{self, Job, Writer};
use super::model::*;
use super::{Store, TransactionFilter};
use anyhow::{Context, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{Acquire, Row};

/// Writes that go through the group-commit writer.
enum WriteOp {
    Boot {
        id: String,
        info: BootInfo,
        status_if_new: RegistrationStatus,
        at: DateTime<Utc>,
    },
    Heartbeat {
        id: String,
        at: DateTime<Utc>,
    },
    Seen {
        id: String,
        at: DateTime<Utc>,
    },
    Status(ConnectorStatus),
    Start(NewTransaction),
    Meter(MeterBatch),
    Stop(StopRequest),
    Anomaly {
        charger_id: String,
        transaction_id: Option<i64>,
        kind: String,
        detail: Value,
        at: DateTime<Utc>,
    },
    Log(NewLogEntry),
    CreateSession(SessionRecord),
    SaveSession(SessionRecord),
    /// Commits after everything queued before it: what `flush` waits for.
    Barrier,
}

enum WriteOut {
    SessionCreated(std::result::Result<(), SessionConflict>),
    Saved(bool),
    Registration(RegistrationStatus),
    Closed(Vec<i64>),
    Started(StartOutcome),
    Stopped(StopOutcome),
    Done,
}

const WRITE_QUEUE: usize = 16 * 1024;

/// Energy registers in Wh: `kWh` values are scaled, a missing unit is Wh.
fn register_wh(sample: &Sample) -> Option<f64> {
    if sample.format.as_deref() == Some("SignedData") {
        return None;
    }
    let value: f64 = sample
        .value
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())?;
    Some(match sample.unit.as_deref() {
        Some("kWh") => value * 1000.0,
        _ => value,
    })
}

fn power_w(sample: &Sample) -> Option<f64> {
    let value: f64 = sample
        .value
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())?;
    Some(match sample.unit.as_deref() {
        Some("kW") => value * 1000.0,
        _ => value,
    })
}

/// What makes two samples the same reading. `context` is left out on
/// purpose: transactionData repeats periodic samples under other contexts.
fn sample_key(connector_id: i64, transaction_id: Option<i64>, s: &Sample) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}",
        transaction_id
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into()),
        connector_id,
        s.sampled_at.timestamp_millis(),
        s.measurand,
        s.phase.as_deref().unwrap_or(""),
        s.location.as_deref().unwrap_or(""),
        s.unit.as_deref().unwrap_or(""),
        s.value
    )
}

fn start_key(tx: &NewTransaction) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        tx.charger_id,
        tx.connector_id,
        tx.id_tag,
        tx.meter_start,
        tx.start_time.timestamp_millis()
    )
}

/// The running figures of a transaction that sampled values move.
struct Running {
    meter_start: i64,
    last_register_wh: Option<f64>,
    last_register_at: Option<DateTime<Utc>>,
    soc_start: Option<f64>,
    soc_last: Option<f64>,
    soc_last_at: Option<DateTime<Utc>>,
    power_w_last: Option<f64>,
}

impl Running {
    fn energy_wh(&self) -> f64 {
        self.last_register_wh
            .map(|r| (r - self.meter_start as f64).max(0.0))
            .unwrap_or(0.0)
    }

    /// Folds new samples in by the charger's timestamps, not arrival order,
    /// and returns the anomalies seen.
    fn fold(&mut self, samples: &[&Sample]) -> Vec<(String, Value)> {
        let mut anomalies = Vec::new();
        let mut ordered: Vec<&&Sample> = samples.iter().collect();
        ordered.sort_by_key(|s| s.sampled_at);
        for s in ordered {
            let whole_meter =
                s.phase.is_none() && matches!(s.location.as_deref(), None | Some("Outlet"));
            match s.measurand.as_str() {
                "Energy.Active.Import.Register" if whole_meter => match register_wh(s) {
                    Some(wh) => {
                        if self.last_register_at.is_none_or(|at| s.sampled_at >= at) {
                            if let Some(prev) = self.last_register_wh.filter(|prev| wh < *prev) {
                                anomalies.push((
                                    "register_went_backwards".into(),
                                    json!({"previousWh": prev, "valueWh": wh, "sampledAt": s.sampled_at}),
                                ));
                            }
                            if wh < self.meter_start as f64 {
                                anomalies.push((
                                    "register_below_meter_start".into(),
                                    json!({"meterStart": self.meter_start, "valueWh": wh, "sampledAt": s.sampled_at}),
                                ));
                            }
                            self.last_register_wh = Some(wh);
                            self.last_register_at = Some(s.sampled_at);
                        }
                    }
                    None => anomalies.push((
                        "unreadable_register".into(),
                        json!({"value": s.value, "format": s.format, "unit": s.unit}),
                    )),
                },
                "SoC" => {
                    if let Ok(soc) = s.value.trim().parse::<f64>() {
                        if self.soc_start.is_none() {
                            self.soc_start = Some(soc);
                        }
                        if self.soc_last_at.is_none_or(|at| s.sampled_at >= at) {
                            self.soc_last = Some(soc);
                            self.soc_last_at = Some(s.sampled_at);
                        }
                    }
                }
                "Power.Active.Import" if whole_meter => {
                    if let Some(w) = power_w(s) {
                        self.power_w_last = Some(w);
                    }
                }
                _ => {}
            }
        }
        anomalies
    }
}

macro_rules! sql_store {
    ($Store:ident, $DB:ty, $Conn:ty, $backend:literal, $migrations:literal, $begin_batch:literal) => {
        /// The
        #[doc = $backend]
        /// implementation of [`Store`].
        pub struct $Store {
            pub(super) pool: sqlx::Pool<$DB>,
            writer: Writer<WriteOp, WriteOut>,
        }

        impl $Store {
            async fn migrate(pool: &sqlx::Pool<$DB>) -> Result<()> {
                sqlx::migrate!($migrations).run(pool).await.context("running database migrations")
            }

            fn start_writer(write_pool: sqlx::Pool<$DB>) -> Writer<WriteOp, WriteOut> {
                let (writer, mut rx) = Writer::channel(WRITE_QUEUE);
                tokio::spawn(async move {
                    let mut jobs = Vec::with_capacity(batch::MAX_BATCH);
                    while batch::next_batch(&mut rx, &mut jobs).await {
                        let results = Self::commit_batch(&write_pool, &jobs).await;
                        batch::answer(&mut jobs, results);
                    }
                });
                writer
            }

            async fn commit_batch(pool: &sqlx::Pool<$DB>, jobs: &[Job<WriteOp, WriteOut>]) -> Result<Vec<Result<WriteOut>>> {
                let mut tx = pool.begin_with($begin_batch).await.context("beginning a write batch")?;
                let mut results = Vec::with_capacity(jobs.len());
                // Message-log entries (two per charger message) are written
                // together in multi-row inserts after the rest: one statement
                // per hundred entries instead of three each.
                let mut log = Vec::new();
                for job in jobs {
                    if let WriteOp::Log(entry) = &job.op {
                        log.push(entry);
                        results.push(Ok(WriteOut::Done));
                        continue;
                    }
                    let mut savepoint = tx.begin().await.context("opening a savepoint")?;
                    match Self::apply(&mut savepoint, &job.op).await {
                        Ok(out) => {
                            savepoint.commit().await.context("releasing a savepoint")?;
                            results.push(Ok(out));
                        }
                        Err(e) => {
                            savepoint.rollback().await.context("rolling back a savepoint")?;
                            results.push(Err(e));
                        }
                    }
                }
                if !log.is_empty() {
                    let mut savepoint = tx.begin().await.context("opening a savepoint")?;
                    match Self::insert_log(&mut savepoint, &log).await {
                        Ok(()) => savepoint.commit().await.context("releasing a savepoint")?,
                        Err(e) => {
                            // The log must never cost a charger its answer.
                            tracing::warn!("{} message-log entries not stored: {e:#}", log.len());
                            savepoint.rollback().await.context("rolling back a savepoint")?;
                        }
                    }
                }
                tx.commit().await.context("committing a write batch")?;
                Ok(results)
            }

            async fn insert_log(c: &mut $Conn, entries: &[&NewLogEntry]) -> Result<()> {
                for chunk in entries.chunks(100) {
                    let mut insert = sqlx::QueryBuilder::<$DB>::new(
                        "INSERT INTO ocpp_messages (charger_id, direction, message_type, message_id, action, payload, logged_at) ",
                    );
                    insert.push_values(chunk, |mut row, e| {
                        row.push_bind(e.charger_id.clone())
                            .push_bind(e.direction.as_str())
                            .push_bind(e.message_type)
                            .push_bind(e.message_id.clone())
                            .push_bind(e.action.clone())
                            .push_bind(e.payload.clone())
                            .push_bind(e.logged_at);
                    });
                    insert.build().execute(&mut *c).await?;
                }
                Ok(())
            }

            async fn apply(c: &mut $Conn, op: &WriteOp) -> Result<WriteOut> {
                Ok(match op {
                    WriteOp::Boot { id, info, status_if_new, at } => {
                        WriteOut::Registration(Self::boot(c, id, info, *status_if_new, *at).await?)
                    }
                    WriteOp::Heartbeat { id, at } => {
                        sqlx::query("UPDATE chargers SET last_heartbeat_at = $1, last_seen_at = $1 WHERE id = $2")
                            .bind(at)
                            .bind(id)
                            .execute(&mut *c)
                            .await?;
                        WriteOut::Done
                    }
                    WriteOp::Seen { id, at } => {
                        sqlx::query("UPDATE chargers SET last_seen_at = $1 WHERE id = $2").bind(at).bind(id).execute(&mut *c).await?;
                        WriteOut::Done
                    }
                    WriteOp::Status(status) => WriteOut::Closed(Self::status(c, status).await?),
                    WriteOp::Start(tx) => WriteOut::Started(Self::start(c, tx).await?),
                    WriteOp::Meter(batch) => {
                        Self::meter(c, batch).await?;
                        WriteOut::Done
                    }
                    WriteOp::Stop(stop) => WriteOut::Stopped(Self::stop(c, stop).await?),
                    WriteOp::Anomaly { charger_id, transaction_id, kind, detail, at } => {
                        Self::anomaly(c, charger_id, *transaction_id, kind, detail, *at).await?;
                        WriteOut::Done
                    }
                    WriteOp::Log(e) => {
                        Self::insert_log(c, &[e]).await?;
                        WriteOut::Done
                    }
                    WriteOp::CreateSession(session) => WriteOut::SessionCreated(Self::create_session(c, session).await?),
                    WriteOp::SaveSession(session) => WriteOut::Saved(Self::write_session(c, session, false).await?),
                    WriteOp::Barrier => WriteOut::Done,
                })
            }

            async fn anomaly(
                c: &mut $Conn,
                charger_id: &str,
                transaction_id: Option<i64>,
                kind: &str,
                detail: &Value,
                at: DateTime<Utc>,
            ) -> Result<()> {
                tracing::info!(charger = charger_id, transaction_id, kind, %detail, "anomaly recorded");
                sqlx::query("INSERT INTO anomalies (charger_id, transaction_id, kind, detail, occurred_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(charger_id)
                    .bind(transaction_id)
                    .bind(kind)
                    .bind(detail.to_string())
                    .bind(at)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            }

            async fn boot(
                c: &mut $Conn,
                id: &str,
                info: &BootInfo,
                status_if_new: RegistrationStatus,
                at: DateTime<Utc>,
            ) -> Result<RegistrationStatus> {
                let row = sqlx::query(
                    "INSERT INTO chargers (id, registration_status, vendor, model, charge_point_serial_number, \
                         charge_box_serial_number, firmware_version, iccid, imsi, meter_type, meter_serial_number, \
                         last_boot_at, last_seen_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12) \
                     ON CONFLICT (id) DO UPDATE SET vendor = excluded.vendor, model = excluded.model, \
                         charge_point_serial_number = excluded.charge_point_serial_number, \
                         charge_box_serial_number = excluded.charge_box_serial_number, \
                         firmware_version = excluded.firmware_version, iccid = excluded.iccid, imsi = excluded.imsi, \
                         meter_type = excluded.meter_type, meter_serial_number = excluded.meter_serial_number, \
                         last_boot_at = excluded.last_boot_at, last_seen_at = excluded.last_seen_at \
                     RETURNING registration_status",
                )
                .bind(id)
                .bind(status_if_new.as_str())
                .bind(&info.vendor)
                .bind(&info.model)
                .bind(&info.charge_point_serial_number)
                .bind(&info.charge_box_serial_number)
                .bind(&info.firmware_version)
                .bind(&info.iccid)
                .bind(&info.imsi)
                .bind(&info.meter_type)
                .bind(&info.meter_serial_number)
                .bind(at)
                .fetch_one(&mut *c)
                .await?;
                let status: String = row.try_get(0)?;
                RegistrationStatus::parse(&status).with_context(|| format!("bad registration status {status:?}"))
            }

            async fn status(c: &mut $Conn, s: &ConnectorStatus) -> Result<Vec<i64>> {
                sqlx::query(
                    "INSERT INTO connectors (charger_id, connector_id, status, error_code, info, vendor_id, vendor_error_code, status_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (charger_id, connector_id) DO UPDATE SET status = excluded.status, \
                         error_code = excluded.error_code, info = excluded.info, vendor_id = excluded.vendor_id, \
                         vendor_error_code = excluded.vendor_error_code, status_at = excluded.status_at, \
                         updated_at = excluded.updated_at",
                )
                .bind(&s.charger_id)
                .bind(s.connector_id)
                .bind(&s.status)
                .bind(&s.error_code)
                .bind(&s.info)
                .bind(&s.vendor_id)
                .bind(&s.vendor_error_code)
                .bind(s.status_at)
                .bind(s.updated_at)
                .execute(&mut *c)
                .await?;
                sqlx::query("UPDATE chargers SET last_seen_at = $1 WHERE id = $2")
                    .bind(s.updated_at)
                    .bind(&s.charger_id)
                    .execute(&mut *c)
                    .await?;
                if s.status != "Available" || s.connector_id == 0 {
                    return Ok(Vec::new());
                }
                // Available with a transaction still open on the connector: the
                // charger's StopTransaction was lost, so the session must not
                // stay active forever. A StopTransaction that comes later still
                // completes it with the charger's own figures.
                let open = Self::open_on_connector(c, &s.charger_id, s.connector_id).await?;
                let mut closed = Vec::new();
                for tx in open.into_iter().filter(|t| t.start_time <= s.status_at) {
                    Self::close(c, &tx, s.status_at, "ConnectorAvailable").await?;
                    closed.push(tx.id);
                }
                Ok(closed)
            }

            async fn open_on_connector(c: &mut $Conn, charger_id: &str, connector_id: i64) -> Result<Vec<TransactionRecord>> {
                let rows = sqlx::query("SELECT * FROM transactions WHERE charger_id = $1 AND connector_id = $2 AND status = $3")
                    .bind(charger_id)
                    .bind(connector_id)
                    .bind(TX_ACTIVE)
                    .fetch_all(&mut *c)
                    .await?;
                rows.iter().map(Self::transaction_from_row).collect()
            }

            /// Ends a transaction the charger never stopped, at its last reading.
            async fn close(c: &mut $Conn, tx: &TransactionRecord, at: DateTime<Utc>, reason: &str) -> Result<()> {
                sqlx::query("UPDATE transactions SET status = $1, stop_time = $2, stop_reason = $3, updated_at = $4 WHERE id = $5")
                    .bind(TX_CLOSED)
                    .bind(at)
                    .bind(reason)
                    .bind(Utc::now())
                    .bind(tx.id)
                    .execute(&mut *c)
                    .await?;
                Self::sync_session(c, tx.id).await?;
                Self::anomaly(
                    c,
                    &tx.charger_id,
                    Some(tx.id),
                    "closed_without_stop",
                    &json!({"reason": reason, "at": at, "energyWh": tx.energy_wh}),
                    Utc::now(),
                )
                .await
            }

            async fn start(c: &mut $Conn, tx: &NewTransaction) -> Result<StartOutcome> {
                let key = start_key(tx);
                if let Some(row) = sqlx::query("SELECT id, id_tag_status FROM transactions WHERE start_key = $1")
                    .bind(&key)
                    .fetch_optional(&mut *c)
                    .await?
                {
                    return Ok(StartOutcome { transaction_id: row.try_get(0)?, id_tag_status: row.try_get(1)?, retransmission: true });
                }
                // A connector holds one transaction at a time: a new start on a
                // connector with one still open proves the old one is over.
                for old in Self::open_on_connector(c, &tx.charger_id, tx.connector_id).await? {
                    Self::close(c, &old, tx.start_time.max(old.start_time), "Superseded").await?;
                }
                let mut id_tag_status = tx.id_tag_status.clone();
                if id_tag_status == "Accepted" {
                    let busy = sqlx::query("SELECT id FROM transactions WHERE upper(id_tag) = $1 AND status = $2 LIMIT 1")
                        .bind(normalize_id_tag(&tx.id_tag))
                        .bind(TX_ACTIVE)
                        .fetch_optional(&mut *c)
                        .await?;
                    if busy.is_some() {
                        id_tag_status = "ConcurrentTx".into();
                    }
                }
                let row = sqlx::query(
                    "INSERT INTO transactions (charger_id, connector_id, id_tag, id_tag_status, reservation_id, meter_start, \
                         start_time, start_key, status, received_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
                )
                .bind(&tx.charger_id)
                .bind(tx.connector_id)
                .bind(&tx.id_tag)
                .bind(&id_tag_status)
                .bind(tx.reservation_id)
                .bind(tx.meter_start)
                .bind(tx.start_time)
                .bind(&key)
                .bind(TX_ACTIVE)
                .bind(tx.received_at)
                .fetch_one(&mut *c)
                .await?;
                let transaction_id: i64 = row.try_get(0)?;
                if tx.start_time > tx.received_at + chrono::Duration::minutes(5) {
                    Self::anomaly(c, &tx.charger_id, Some(transaction_id), "timestamp_in_future",
                        &json!({"timestamp": tx.start_time, "receivedAt": tx.received_at}), tx.received_at).await?;
                }
                // The session this transaction belongs to. Its own savepoint: a
                // session that cannot be bound is an anomaly for an operator,
                // never a reason to fail the charger's StartTransaction.
                let mut nested = c.begin().await?;
                match Self::bind_session(&mut nested, tx, transaction_id, &id_tag_status).await {
                    Ok(()) => nested.commit().await?,
                    Err(e) => {
                        nested.rollback().await?;
                        Self::anomaly(c, &tx.charger_id, Some(transaction_id), "session_not_bound",
                            &json!({"error": format!("{e:#}")}), tx.received_at).await?;
                    }
                }
                Ok(StartOutcome { transaction_id, id_tag_status, retransmission: false })
            }

            /// Binds a new transaction to the driver's session: the pending
            /// remote start at this charger if there is one, else a new OCPP
            /// session when the idTag belongs to a driver without one.
            async fn bind_session(c: &mut $Conn, tx: &NewTransaction, transaction_id: i64, id_tag_status: &str) -> Result<()> {
                let owner = sqlx::query("SELECT user_id FROM id_tags WHERE id_tag = $1").bind(normalize_id_tag(&tx.id_tag)).fetch_optional(&mut *c).await?;
                let Some(user_id) = owner.map(|r| r.try_get::<Option<String>, _>(0)).transpose()?.flatten() else {
                    return Ok(());
                };
                let pending = sqlx::query(
                    "SELECT * FROM sessions WHERE user_id = $1 AND status = $2 AND charger_id = $3 AND transaction_id IS NULL \
                     ORDER BY created_at LIMIT 1",
                )
                .bind(&user_id)
                .bind(SESSION_ACTIVE)
                .bind(&tx.charger_id)
                .fetch_optional(&mut *c)
                .await?;
                let now = Utc::now();
                if let Some(row) = pending {
                    let mut session = Self::session_from_row(&row)?;
                    if id_tag_status == "Accepted" {
                        session.transaction_id = Some(transaction_id);
                        session.ocpp_connector_id = Some(tx.connector_id);
                        session.connector_id = format!("connector-{}", tx.connector_id);
                        session.start_time = tx.start_time;
                        session.id_tag = Some(tx.id_tag.clone());
                        session.remote_start_deadline = None;
                    } else {
                        session.status = SESSION_CANCELLED.into();
                        session.end_time = Some(now);
                        session.end_reason = Some(format!("StartTransaction answered {id_tag_status}"));
                    }
                    session.updated_at = now;
                    Self::write_session(c, &session, true).await?;
                    return Ok(());
                }
                if id_tag_status != "Accepted" {
                    return Ok(());
                }
                let busy = sqlx::query("SELECT id FROM sessions WHERE user_id = $1 AND status = $2")
                    .bind(&user_id)
                    .bind(SESSION_ACTIVE)
                    .fetch_optional(&mut *c)
                    .await?;
                if busy.is_some() {
                    anyhow::bail!("driver {user_id} already has an active session");
                }
                let station = sqlx::query("SELECT * FROM stations WHERE id = $1").bind(&tx.charger_id).fetch_optional(&mut *c).await?;
                let station = station.as_ref().map(Self::station_from_row).transpose()?;
                let capacity = sqlx::query("SELECT battery_capacity_wh FROM users WHERE id = $1").bind(&user_id).fetch_optional(&mut *c).await?;
                let capacity = capacity.map(|r| r.try_get::<Option<i64>, _>(0)).transpose()?.flatten();
                let tariff = match &station {
                    Some(s) => Tariff { price_micros: s.price_micros, currency: s.currency.clone() },
                    None => tx.default_tariff.clone(),
                };
                let mut session = SessionRecord::begin(SessionStart {
                    user_id,
                    station_id: tx.charger_id.clone(),
                    station_name: station.as_ref().map(|s| s.name.clone()).unwrap_or_else(|| tx.charger_id.clone()),
                    connector_id: format!("connector-{}", tx.connector_id),
                    tariff,
                    battery_capacity_wh: capacity.unwrap_or(crate::engine::DEFAULT_BATTERY_CAPACITY_WH),
                    start_time: tx.start_time,
                });
                session.source = "ocpp".into();
                session.charger_id = Some(tx.charger_id.clone());
                session.ocpp_connector_id = Some(tx.connector_id);
                session.transaction_id = Some(transaction_id);
                session.id_tag = Some(tx.id_tag.clone());
                session.energy_reported = true;
                Self::insert_session(c, &session).await
            }

            /// Brings the session bound to a transaction in line with it:
            /// the meter's energy, the battery's SoC, the cost, and completion
            /// when the transaction ended. Only active sessions change, so a
            /// session is never completed (or billed) twice.
            async fn sync_session(c: &mut $Conn, transaction_id: i64) -> Result<()> {
                let row = sqlx::query("SELECT * FROM sessions WHERE transaction_id = $1 AND status = $2")
                    .bind(transaction_id)
                    .bind(SESSION_ACTIVE)
                    .fetch_optional(&mut *c)
                    .await?;
                let Some(row) = row else { return Ok(()) };
                let tx_row = sqlx::query("SELECT * FROM transactions WHERE id = $1").bind(transaction_id).fetch_one(&mut *c).await?;
                let tx = Self::transaction_from_row(&tx_row)?;
                let mut session = Self::session_from_row(&row)?;
                crate::engine::apply_transaction(&mut session, &tx);
                Self::write_session(c, &session, false).await.map(|_| ())
            }

            async fn insert_session(c: &mut $Conn, s: &SessionRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, station_id, station_name, connector_id, source, status, charger_id, \
                         ocpp_connector_id, transaction_id, id_tag, start_time, end_time, last_reading_at, battery_level_start, \
                         battery_level, energy_wh, energy_reported, price_micros, currency, cost_minor, battery_capacity_wh, \
                         station_rating, end_reason, remote_start_deadline, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
                         $22, $23, $24, $25, $26, $27)",
                )
                .bind(&s.id)
                .bind(&s.user_id)
                .bind(&s.station_id)
                .bind(&s.station_name)
                .bind(&s.connector_id)
                .bind(&s.source)
                .bind(&s.status)
                .bind(&s.charger_id)
                .bind(s.ocpp_connector_id)
                .bind(s.transaction_id)
                .bind(&s.id_tag)
                .bind(s.start_time)
                .bind(s.end_time)
                .bind(s.last_reading_at)
                .bind(s.battery_level_start)
                .bind(s.battery_level)
                .bind(s.energy_wh)
                .bind(s.energy_reported)
                .bind(s.price_micros)
                .bind(&s.currency)
                .bind(s.cost_minor)
                .bind(s.battery_capacity_wh)
                .bind(s.station_rating)
                .bind(&s.end_reason)
                .bind(s.remote_start_deadline)
                .bind(s.created_at)
                .bind(s.updated_at)
                .execute(&mut *c)
                .await?;
                Ok(())
            }

            /// Saves a session's changing fields, only while it is active.
            /// `binding` also saves what binding to a transaction changes.
            async fn write_session(c: &mut $Conn, s: &SessionRecord, binding: bool) -> Result<bool> {
                if binding {
                    sqlx::query(
                        "UPDATE sessions SET transaction_id = $1, ocpp_connector_id = $2, connector_id = $3, start_time = $4, \
                             id_tag = $5, remote_start_deadline = $6 WHERE id = $7 AND status = $8",
                    )
                    .bind(s.transaction_id)
                    .bind(s.ocpp_connector_id)
                    .bind(&s.connector_id)
                    .bind(s.start_time)
                    .bind(&s.id_tag)
                    .bind(s.remote_start_deadline)
                    .bind(&s.id)
                    .bind(SESSION_ACTIVE)
                    .execute(&mut *c)
                    .await?;
                }
                let changed = sqlx::query(
                    "UPDATE sessions SET status = $1, end_time = $2, last_reading_at = $3, battery_level_start = $4, \
                         battery_level = $5, energy_wh = $6, energy_reported = $7, cost_minor = $8, station_rating = $9, \
                         end_reason = $10, updated_at = $11 WHERE id = $12 AND status = $13",
                )
                .bind(&s.status)
                .bind(s.end_time)
                .bind(s.last_reading_at)
                .bind(s.battery_level_start)
                .bind(s.battery_level)
                .bind(s.energy_wh)
                .bind(s.energy_reported)
                .bind(s.cost_minor)
                .bind(s.station_rating)
                .bind(&s.end_reason)
                .bind(s.updated_at)
                .bind(&s.id)
                .bind(SESSION_ACTIVE)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(changed > 0)
            }

            async fn create_session(c: &mut $Conn, s: &SessionRecord) -> Result<std::result::Result<(), SessionConflict>> {
                let user_busy = sqlx::query("SELECT id FROM sessions WHERE user_id = $1 AND status = $2")
                    .bind(&s.user_id)
                    .bind(SESSION_ACTIVE)
                    .fetch_optional(&mut *c)
                    .await?;
                if user_busy.is_some() {
                    return Ok(Err(SessionConflict::UserHasActiveSession));
                }
                let connector_busy = sqlx::query("SELECT id FROM sessions WHERE station_id = $1 AND connector_id = $2 AND status = $3")
                    .bind(&s.station_id)
                    .bind(&s.connector_id)
                    .bind(SESSION_ACTIVE)
                    .fetch_optional(&mut *c)
                    .await?;
                if connector_busy.is_some() {
                    return Ok(Err(SessionConflict::ConnectorBusy));
                }
                Self::insert_session(c, s).await?;
                Ok(Ok(()))
            }

            fn station_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<StationRecord> {
                Ok(StationRecord {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    price_micros: row.try_get("price_micros")?,
                    currency: row.try_get("currency")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn session_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<SessionRecord> {
                Ok(SessionRecord {
                    id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    station_id: row.try_get("station_id")?,
                    station_name: row.try_get("station_name")?,
                    connector_id: row.try_get("connector_id")?,
                    source: row.try_get("source")?,
                    status: row.try_get("status")?,
                    charger_id: row.try_get("charger_id")?,
                    ocpp_connector_id: row.try_get("ocpp_connector_id")?,
                    transaction_id: row.try_get("transaction_id")?,
                    id_tag: row.try_get("id_tag")?,
                    start_time: row.try_get("start_time")?,
                    end_time: row.try_get("end_time")?,
                    last_reading_at: row.try_get("last_reading_at")?,
                    battery_level_start: row.try_get("battery_level_start")?,
                    battery_level: row.try_get("battery_level")?,
                    energy_wh: row.try_get("energy_wh")?,
                    energy_reported: row.try_get("energy_reported")?,
                    price_micros: row.try_get("price_micros")?,
                    currency: row.try_get("currency")?,
                    cost_minor: row.try_get("cost_minor")?,
                    battery_capacity_wh: row.try_get("battery_capacity_wh")?,
                    station_rating: row.try_get("station_rating")?,
                    end_reason: row.try_get("end_reason")?,
                    remote_start_deadline: row.try_get("remote_start_deadline")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    payment: SessionPayment {
                        wallet_address: row.try_get("wallet_address")?,
                        chain: row.try_get("chain")?,
                        balance_check_id: row.try_get("balance_check_id")?,
                        payment_due: row.try_get("payment_due")?,
                    },
                })
            }

            /// Stores samples once each; returns those that were new.
            async fn insert_samples<'s>(
                c: &mut $Conn,
                charger_id: &str,
                connector_id: i64,
                transaction_id: Option<i64>,
                samples: &'s [Sample],
                received_at: DateTime<Utc>,
            ) -> Result<Vec<&'s Sample>> {
                // One multi-row insert per message; RETURNING names the rows
                // that were new, so a repeated reading is neither stored nor
                // counted twice.
                let keys: Vec<String> = samples.iter().map(|s| sample_key(connector_id, transaction_id, s)).collect();
                let mut inserted = std::collections::HashSet::new();
                for chunk in samples.iter().zip(&keys).collect::<Vec<_>>().chunks(500) {
                    let mut insert = sqlx::QueryBuilder::<$DB>::new(
                        "INSERT INTO meter_values (charger_id, connector_id, transaction_id, sampled_at, measurand, phase, unit, \
                             context, location, format, value, sample_key, received_at) ",
                    );
                    insert.push_values(chunk, |mut row, (s, key)| {
                        row.push_bind(charger_id.to_owned())
                            .push_bind(connector_id)
                            .push_bind(transaction_id)
                            .push_bind(s.sampled_at)
                            .push_bind(s.measurand.clone())
                            .push_bind(s.phase.clone())
                            .push_bind(s.unit.clone())
                            .push_bind(s.context.clone())
                            .push_bind(s.location.clone())
                            .push_bind(s.format.clone())
                            .push_bind(s.value.clone())
                            .push_bind((*key).clone())
                            .push_bind(received_at);
                    });
                    insert.push(" ON CONFLICT (charger_id, sample_key) DO NOTHING RETURNING sample_key");
                    for row in insert.build().fetch_all(&mut *c).await? {
                        inserted.insert(row.try_get::<String, _>(0)?);
                    }
                }
                // A key inserted once makes only its first sample fresh.
                let fresh = samples.iter().zip(&keys).filter(|(_, key)| inserted.remove(*key)).map(|(s, _)| s).collect();
                Ok(fresh)
            }

            /// Looks a transaction up for a message of `charger_id`: the
            /// transaction if it is this charger's, else the anomaly to keep.
            async fn owned_transaction(
                c: &mut $Conn,
                charger_id: &str,
                transaction_id: i64,
            ) -> Result<std::result::Result<TransactionRecord, &'static str>> {
                let row = sqlx::query("SELECT * FROM transactions WHERE id = $1").bind(transaction_id).fetch_optional(&mut *c).await?;
                Ok(match row {
                    None => Err("unknown_transaction"),
                    Some(row) => {
                        let tx = Self::transaction_from_row(&row)?;
                        if tx.charger_id == charger_id { Ok(tx) } else { Err("other_chargers_transaction") }
                    }
                })
            }

            async fn meter(c: &mut $Conn, b: &MeterBatch) -> Result<()> {
                let target = match b.transaction_id {
                    None => None,
                    Some(id) => match Self::owned_transaction(c, &b.charger_id, id).await? {
                        Ok(tx) => Some(tx),
                        Err(kind) => {
                            Self::anomaly(c, &b.charger_id, None, kind,
                                &json!({"message": "MeterValues", "transactionId": id, "connectorId": b.connector_id}), b.received_at).await?;
                            None
                        }
                    },
                };
                let tx_id = target.as_ref().map(|t| t.id);
                let fresh = Self::insert_samples(c, &b.charger_id, b.connector_id, tx_id, &b.samples, b.received_at).await?;
                if let Some(tx) = target.filter(|t| t.status != TX_STOPPED) {
                    if !fresh.is_empty() {
                        let mut running = Running::from(&tx);
                        let anomalies = running.fold(&fresh);
                        Self::save_running(c, tx.id, &running, b.received_at).await?;
                        Self::sync_session(c, tx.id).await?;
                        for (kind, detail) in anomalies {
                            Self::anomaly(c, &b.charger_id, Some(tx.id), &kind, &detail, b.received_at).await?;
                        }
                    }
                }
                Ok(())
            }

            async fn save_running(c: &mut $Conn, id: i64, r: &Running, now: DateTime<Utc>) -> Result<()> {
                sqlx::query(
                    "UPDATE transactions SET last_register_wh = $1, last_register_at = $2, energy_wh = $3, soc_start = $4, \
                         soc_last = $5, soc_last_at = $6, power_w_last = $7, updated_at = $8 WHERE id = $9",
                )
                .bind(r.last_register_wh)
                .bind(r.last_register_at)
                .bind(r.energy_wh())
                .bind(r.soc_start)
                .bind(r.soc_last)
                .bind(r.soc_last_at)
                .bind(r.power_w_last)
                .bind(now)
                .bind(id)
                .execute(&mut *c)
                .await?;
                Ok(())
            }

            async fn stop(c: &mut $Conn, s: &StopRequest) -> Result<StopOutcome> {
                let detail = || json!({
                    "transactionId": s.transaction_id, "meterStop": s.meter_stop, "timestamp": s.stop_time,
                    "reason": s.reason, "idTag": s.id_tag, "samples": s.samples.len()
                });
                let tx = match Self::owned_transaction(c, &s.charger_id, s.transaction_id).await? {
                    Ok(tx) => tx,
                    Err(kind) => {
                        // Kept whole (with its samples) for an operator to see.
                        Self::insert_samples(c, &s.charger_id, 0, None, &s.samples, s.received_at).await?;
                        Self::anomaly(c, &s.charger_id, None, &format!("stop_{kind}"), &detail(), s.received_at).await?;
                        return Ok(if kind == "unknown_transaction" { StopOutcome::UnknownTransaction } else { StopOutcome::OtherCharger });
                    }
                };
                if tx.status == TX_STOPPED {
                    if tx.meter_stop == Some(s.meter_stop) && tx.stop_time == Some(s.stop_time) {
                        Self::insert_samples(c, &s.charger_id, tx.connector_id, Some(tx.id), &s.samples, s.received_at).await?;
                        return Ok(StopOutcome::Retransmission);
                    }
                    Self::anomaly(c, &s.charger_id, Some(tx.id), "second_stop", &detail(), s.received_at).await?;
                    return Ok(StopOutcome::AlreadyStopped);
                }
                let fresh = Self::insert_samples(c, &s.charger_id, tx.connector_id, Some(tx.id), &s.samples, s.received_at).await?;
                let mut running = Running::from(&tx);
                let mut anomalies = running.fold(&fresh);
                let stop_wh = s.meter_stop as f64;
                match running.last_register_wh {
                    Some(last) if stop_wh < last => anomalies.push((
                        "meter_stop_below_register".into(),
                        json!({"meterStop": s.meter_stop, "lastRegisterWh": last}),
                    )),
                    _ => {
                        running.last_register_wh = Some(stop_wh);
                        running.last_register_at = Some(s.stop_time);
                    }
                }
                if s.meter_stop < tx.meter_start {
                    anomalies.push(("meter_stop_below_meter_start".into(), json!({"meterStart": tx.meter_start, "meterStop": s.meter_stop})));
                }
                if s.stop_time < tx.start_time {
                    anomalies.push(("stop_before_start".into(), json!({"start": tx.start_time, "stop": s.stop_time})));
                }
                Self::save_running(c, tx.id, &running, s.received_at).await?;
                sqlx::query(
                    "UPDATE transactions SET status = $1, meter_stop = $2, stop_time = $3, stop_reason = $4, stop_id_tag = $5 WHERE id = $6",
                )
                .bind(TX_STOPPED)
                .bind(s.meter_stop)
                .bind(s.stop_time)
                .bind(&s.reason)
                .bind(&s.id_tag)
                .bind(tx.id)
                .execute(&mut *c)
                .await?;
                Self::sync_session(c, tx.id).await?;
                for (kind, detail) in anomalies {
                    Self::anomaly(c, &s.charger_id, Some(tx.id), &kind, &detail, s.received_at).await?;
                }
                Ok(StopOutcome::Stopped)
            }

            fn charger_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<ChargerRecord> {
                let status: String = row.try_get("registration_status")?;
                Ok(ChargerRecord {
                    id: row.try_get("id")?,
                    registration_status: RegistrationStatus::parse(&status).unwrap_or(RegistrationStatus::Pending),
                    password_hash: row.try_get("password_hash")?,
                    vendor: row.try_get("vendor")?,
                    model: row.try_get("model")?,
                    charge_point_serial_number: row.try_get("charge_point_serial_number")?,
                    charge_box_serial_number: row.try_get("charge_box_serial_number")?,
                    firmware_version: row.try_get("firmware_version")?,
                    iccid: row.try_get("iccid")?,
                    imsi: row.try_get("imsi")?,
                    meter_type: row.try_get("meter_type")?,
                    meter_serial_number: row.try_get("meter_serial_number")?,
                    last_boot_at: row.try_get("last_boot_at")?,
                    last_heartbeat_at: row.try_get("last_heartbeat_at")?,
                    last_seen_at: row.try_get("last_seen_at")?,
                    created_at: row.try_get("created_at")?,
                })
            }

            fn connector_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<ConnectorStatus> {
                Ok(ConnectorStatus {
                    charger_id: row.try_get("charger_id")?,
                    connector_id: row.try_get("connector_id")?,
                    status: row.try_get("status")?,
                    error_code: row.try_get("error_code")?,
                    info: row.try_get("info")?,
                    vendor_id: row.try_get("vendor_id")?,
                    vendor_error_code: row.try_get("vendor_error_code")?,
                    status_at: row.try_get("status_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn transaction_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<TransactionRecord> {
                Ok(TransactionRecord {
                    id: row.try_get("id")?,
                    charger_id: row.try_get("charger_id")?,
                    connector_id: row.try_get("connector_id")?,
                    id_tag: row.try_get("id_tag")?,
                    id_tag_status: row.try_get("id_tag_status")?,
                    reservation_id: row.try_get("reservation_id")?,
                    meter_start: row.try_get("meter_start")?,
                    start_time: row.try_get("start_time")?,
                    status: row.try_get("status")?,
                    meter_stop: row.try_get("meter_stop")?,
                    stop_time: row.try_get("stop_time")?,
                    stop_reason: row.try_get("stop_reason")?,
                    stop_id_tag: row.try_get("stop_id_tag")?,
                    last_register_wh: row.try_get("last_register_wh")?,
                    last_register_at: row.try_get("last_register_at")?,
                    energy_wh: row.try_get("energy_wh")?,
                    soc_start: row.try_get("soc_start")?,
                    soc_last: row.try_get("soc_last")?,
                    soc_last_at: row.try_get("soc_last_at")?,
                    power_w_last: row.try_get("power_w_last")?,
                    received_at: row.try_get("received_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn user_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<UserRecord> {
                Ok(UserRecord {
                    id: row.try_get("id")?,
                    email: row.try_get("email")?,
                    name: row.try_get("name")?,
                    role: row.try_get("role")?,
                    password_hash: row.try_get("password_hash")?,
                    battery_capacity_wh: row.try_get("battery_capacity_wh")?,
                    created_at: row.try_get("created_at")?,
                })
            }

            fn id_tag_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<IdTagRecord> {
                Ok(IdTagRecord {
                    id_tag: row.try_get("id_tag")?,
                    user_id: row.try_get("user_id")?,
                    status: row.try_get("status")?,
                    expiry_date: row.try_get("expiry_date")?,
                    parent_id_tag: row.try_get("parent_id_tag")?,
                    created_at: row.try_get("created_at")?,
                })
            }

            async fn write(&self, op: WriteOp) -> Result<WriteOut> {
                self.writer.write(op).await
            }
        }

        #[async_trait]
        impl Store for $Store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn flush(&self) -> Result<()> {
                self.write(WriteOp::Barrier).await.map(|_| ())
            }

            async fn setting(&self, key: &str) -> Result<Option<String>> {
                let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
                Ok(match row { Some(r) => Some(r.try_get(0)?), None => None })
            }

            async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
                sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&self.pool)
                    .await?;
                self.setting(key).await?.context("setting vanished after insert")
            }

            async fn charger(&self, id: &str) -> Result<Option<ChargerRecord>> {
                let row = sqlx::query("SELECT * FROM chargers WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::charger_from_row).transpose()
            }

            async fn chargers(&self) -> Result<Vec<ChargerRecord>> {
                let rows = sqlx::query("SELECT * FROM chargers ORDER BY id").fetch_all(&self.pool).await?;
                rows.iter().map(Self::charger_from_row).collect()
            }

            async fn provision_charger(
                &self,
                id: &str,
                registration: Option<RegistrationStatus>,
                password_hash: Option<Option<String>>,
            ) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO chargers (id, registration_status, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
                    .bind(id)
                    .bind(registration.unwrap_or(RegistrationStatus::Accepted).as_str())
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                if let Some(status) = registration {
                    sqlx::query("UPDATE chargers SET registration_status = $1 WHERE id = $2")
                        .bind(status.as_str())
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(hash) = password_hash {
                    sqlx::query("UPDATE chargers SET password_hash = $1 WHERE id = $2").bind(hash).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn record_boot(
                &self,
                id: &str,
                info: BootInfo,
                status_if_new: RegistrationStatus,
                at: DateTime<Utc>,
            ) -> Result<RegistrationStatus> {
                match self.write(WriteOp::Boot { id: id.to_owned(), info, status_if_new, at }).await? {
                    WriteOut::Registration(status) => Ok(status),
                    _ => unreachable!("a boot write answers with a registration status"),
                }
            }

            async fn record_heartbeat(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
                self.write(WriteOp::Heartbeat { id: id.to_owned(), at }).await.map(|_| ())
            }

            async fn record_seen(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
                self.write(WriteOp::Seen { id: id.to_owned(), at }).await.map(|_| ())
            }

            async fn record_status(&self, status: ConnectorStatus) -> Result<Vec<i64>> {
                match self.write(WriteOp::Status(status)).await? {
                    WriteOut::Closed(ids) => Ok(ids),
                    _ => unreachable!("a status write answers with the transactions it closed"),
                }
            }

            async fn connectors(&self, charger_id: &str) -> Result<Vec<ConnectorStatus>> {
                let rows = sqlx::query("SELECT * FROM connectors WHERE charger_id = $1 ORDER BY connector_id")
                    .bind(charger_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::connector_from_row).collect()
            }

            async fn upsert_user(&self, u: &UserRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO users (id, email, name, role, password_hash, battery_capacity_wh, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = excluded.name, role = excluded.role, \
                         password_hash = COALESCE(excluded.password_hash, users.password_hash), \
                         battery_capacity_wh = COALESCE(excluded.battery_capacity_wh, users.battery_capacity_wh)",
                )
                .bind(&u.id)
                .bind(&u.email)
                .bind(&u.name)
                .bind(&u.role)
                .bind(&u.password_hash)
                .bind(u.battery_capacity_wh)
                .bind(u.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn user(&self, id: &str) -> Result<Option<UserRecord>> {
                let row = sqlx::query("SELECT * FROM users WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::user_from_row).transpose()
            }

            async fn upsert_id_tag(&self, t: &IdTagRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO id_tags (id_tag, user_id, status, expiry_date, parent_id_tag, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (id_tag) DO UPDATE SET user_id = excluded.user_id, status = excluded.status, \
                         expiry_date = excluded.expiry_date, parent_id_tag = excluded.parent_id_tag",
                )
                .bind(normalize_id_tag(&t.id_tag))
                .bind(&t.user_id)
                .bind(&t.status)
                .bind(t.expiry_date)
                .bind(&t.parent_id_tag)
                .bind(t.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn id_tag(&self, id_tag: &str) -> Result<Option<IdTagRecord>> {
                let row = sqlx::query("SELECT * FROM id_tags WHERE id_tag = $1").bind(normalize_id_tag(id_tag)).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::id_tag_from_row).transpose()
            }

            async fn start_transaction(&self, tx: NewTransaction) -> Result<StartOutcome> {
                match self.write(WriteOp::Start(tx)).await? {
                    WriteOut::Started(outcome) => Ok(outcome),
                    _ => unreachable!("a start write answers with its outcome"),
                }
            }

            async fn add_meter_values(&self, batch: MeterBatch) -> Result<()> {
                self.write(WriteOp::Meter(batch)).await.map(|_| ())
            }

            async fn stop_transaction(&self, stop: StopRequest) -> Result<StopOutcome> {
                match self.write(WriteOp::Stop(stop)).await? {
                    WriteOut::Stopped(outcome) => Ok(outcome),
                    _ => unreachable!("a stop write answers with its outcome"),
                }
            }

            async fn transaction(&self, id: i64) -> Result<Option<TransactionRecord>> {
                let row = sqlx::query("SELECT * FROM transactions WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::transaction_from_row).transpose()
            }

            async fn transactions(&self, f: TransactionFilter) -> Result<Vec<TransactionRecord>> {
                // NULL parameters switch a condition off, so one statement serves every filter.
                let rows = sqlx::query(
                    "SELECT * FROM transactions WHERE ($1 IS NULL OR charger_id = $1) AND ($2 IS NULL OR status = $2) \
                     ORDER BY id DESC LIMIT $3",
                )
                .bind(&f.charger_id)
                .bind(&f.status)
                .bind(f.limit.unwrap_or(1000))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::transaction_from_row).collect()
            }

            async fn meter_values(&self, transaction_id: i64) -> Result<Vec<StoredSample>> {
                let rows = sqlx::query("SELECT * FROM meter_values WHERE transaction_id = $1 ORDER BY sampled_at, id")
                    .bind(transaction_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredSample {
                            id: row.try_get("id")?,
                            charger_id: row.try_get("charger_id")?,
                            connector_id: row.try_get("connector_id")?,
                            transaction_id: row.try_get("transaction_id")?,
                            sampled_at: row.try_get("sampled_at")?,
                            measurand: row.try_get("measurand")?,
                            phase: row.try_get("phase")?,
                            unit: row.try_get("unit")?,
                            context: row.try_get("context")?,
                            location: row.try_get("location")?,
                            format: row.try_get("format")?,
                            value: row.try_get("value")?,
                        })
                    })
                    .collect()
            }

            async fn record_anomaly(&self, charger_id: &str, transaction_id: Option<i64>, kind: &str, detail: Value) -> Result<()> {
                self.write(WriteOp::Anomaly {
                    charger_id: charger_id.to_owned(),
                    transaction_id,
                    kind: kind.to_owned(),
                    detail,
                    at: Utc::now(),
                })
                .await
                .map(|_| ())
            }

            async fn anomalies(&self, charger_id: Option<&str>, limit: i64) -> Result<Vec<Anomaly>> {
                let rows = sqlx::query("SELECT * FROM anomalies WHERE ($1 IS NULL OR charger_id = $1) ORDER BY id DESC LIMIT $2")
                    .bind(charger_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let detail: String = row.try_get("detail")?;
                        Ok(Anomaly {
                            id: row.try_get("id")?,
                            charger_id: row.try_get("charger_id")?,
                            transaction_id: row.try_get("transaction_id")?,
                            kind: row.try_get("kind")?,
                            detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                            occurred_at: row.try_get("occurred_at")?,
                        })
                    })
                    .collect()
            }

            async fn station(&self, id: &str) -> Result<Option<StationRecord>> {
                let row = sqlx::query("SELECT * FROM stations WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::station_from_row).transpose()
            }

            async fn stations(&self) -> Result<Vec<StationRecord>> {
                let rows = sqlx::query("SELECT * FROM stations ORDER BY id").fetch_all(&self.pool).await?;
                rows.iter().map(Self::station_from_row).collect()
            }

            async fn upsert_station(&self, st: &StationRecord) -> Result<StationRecord> {
                let row = sqlx::query(
                    "INSERT INTO stations (id, name, price_micros, currency, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_micros = excluded.price_micros, \
                         currency = excluded.currency, updated_at = excluded.updated_at RETURNING *",
                )
                .bind(&st.id)
                .bind(&st.name)
                .bind(st.price_micros)
                .bind(&st.currency)
                .bind(st.updated_at)
                .fetch_one(&self.pool)
                .await?;
                Self::station_from_row(&row)
            }

            async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
                let row = sqlx::query("SELECT * FROM users WHERE email = $1").bind(email).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::user_from_row).transpose()
            }

            async fn users(&self) -> Result<Vec<UserRecord>> {
                let rows = sqlx::query("SELECT * FROM users ORDER BY created_at, id").fetch_all(&self.pool).await?;
                rows.iter().map(Self::user_from_row).collect()
            }

            async fn ensure_user(&self, id: &str) -> Result<()> {
                sqlx::query("INSERT INTO users (id, name, role, created_at) VALUES ($1, '', 'driver', $2) ON CONFLICT (id) DO NOTHING")
                    .bind(id)
                    .bind(Utc::now())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn id_tags_of_user(&self, user_id: &str) -> Result<Vec<IdTagRecord>> {
                let rows = sqlx::query("SELECT * FROM id_tags WHERE user_id = $1 ORDER BY created_at, id_tag")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::id_tag_from_row).collect()
            }

            async fn create_session(&self, session: SessionRecord) -> Result<std::result::Result<(), SessionConflict>> {
                match self.write(WriteOp::CreateSession(session)).await? {
                    WriteOut::SessionCreated(outcome) => Ok(outcome),
                    _ => unreachable!("a session write answers with its outcome"),
                }
            }

            async fn save_session(&self, session: SessionRecord) -> Result<bool> {
                match self.write(WriteOp::SaveSession(session)).await? {
                    WriteOut::Saved(changed) => Ok(changed),
                    _ => unreachable!("a session save answers whether it changed anything"),
                }
            }

            async fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
                let row = sqlx::query("SELECT * FROM sessions WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::session_from_row).transpose()
            }

            async fn active_session(&self, user_id: &str) -> Result<Option<SessionRecord>> {
                let row = sqlx::query("SELECT * FROM sessions WHERE user_id = $1 AND status = $2")
                    .bind(user_id)
                    .bind(SESSION_ACTIVE)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::session_from_row).transpose()
            }

            async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>> {
                let rows = sqlx::query("SELECT * FROM sessions WHERE user_id = $1 ORDER BY start_time DESC, created_at DESC")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::session_from_row).collect()
            }

            async fn active_sessions(&self) -> Result<Vec<SessionRecord>> {
                let rows = sqlx::query("SELECT * FROM sessions WHERE status = $1 ORDER BY created_at")
                    .bind(SESSION_ACTIVE)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::session_from_row).collect()
            }

            fn log_message(&self, entry: NewLogEntry) {
                self.writer.write_detached(WriteOp::Log(entry));
            }

            async fn messages(&self, charger_id: &str, limit: i64) -> Result<Vec<LoggedMessage>> {
                let rows = sqlx::query("SELECT * FROM ocpp_messages WHERE charger_id = $1 ORDER BY id DESC LIMIT $2")
                    .bind(charger_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(LoggedMessage {
                            id: row.try_get("id")?,
                            charger_id: row.try_get("charger_id")?,
                            direction: row.try_get("direction")?,
                            message_type: row.try_get("message_type")?,
                            message_id: row.try_get("message_id")?,
                            action: row.try_get("action")?,
                            payload: row.try_get("payload")?,
                            logged_at: row.try_get("logged_at")?,
                        })
                    })
                    .collect()
            }
        }
    };
}

impl From<&TransactionRecord> for Running {
    fn from(t: &TransactionRecord) -> Self {
        Running {
            meter_start: t.meter_start,
            last_register_wh: t.last_register_wh,
            last_register_at: t.last_register_at,
            soc_start: t.soc_start,
            soc_last: t.soc_last,
            soc_last_at: t.soc_last_at,
            power_w_last: t.power_w_last,
        }
    }
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::SqliteConnection,
    "sqlite",
    "./migrations/sqlite",
    // IMMEDIATE takes the write lock up front. A deferred transaction that
    // reads before it writes fails at once (SQLITE_BUSY_SNAPSHOT, no waiting)
    // when another connection committed in between, as the API's writes may.
    "BEGIN IMMEDIATE"
);
sql_store!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::PgConnection,
    "postgres",
    "./migrations/postgres",
    "BEGIN"
);

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        use std::str::FromStr;
        // WAL lets readers run beside the one writer; FULL makes a commit
        // durable across power loss, not just a killed process. Group commit
        // is what keeps FULL affordable.
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("bad SQLite URL {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening SQLite database {url}"))?;
        Self::migrate(&write_pool).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let writer = Self::start_writer(write_pool);
        Ok(SqliteStore { pool, writer })
    }
}

impl PostgresStore {
    pub async fn open(url: &str) -> Result<Self> {
        use sqlx::postgres::PgPoolOptions;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        Self::migrate(&pool).await?;
        let writer = Self::start_writer(pool.clone());
        Ok(PostgresStore { pool, writer })
    }
}
