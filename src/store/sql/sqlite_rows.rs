//! The rows of a SQLite write batch, written straight through SQLite's own
//! API on the writer's thread.
//!
//! Why not through sqlx as everything else: sqlx runs each SQLite statement
//! on a worker thread of its own and hands every statement and its result
//! over between threads, and it builds, binds and encodes the batch's large
//! multi-row statements on the writer's thread first. Under load the two
//! threads took turns rather than working (profiled: about 40 µs of SQLite
//! and as much again of hand-offs and encoding per MeterValues). Here the
//! writer locks the handle out of sqlx's worker (which sqlx provides for
//! direct SQLite calls) and runs one prepared, cached statement per row in
//! the transaction sqlx began, with no thread hand-off at all. The SQL is
//! the same as the multi-row statements', one row at a time.

use super::Batch;
use crate::store::model::*;
use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::params;

/// A time as sqlx writes `DateTime<Utc>` into SQLite (RFC 3339, `+00:00`,
/// as many fractional digits as needed), so rows written here and rows
/// written through sqlx compare and read back alike.
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn time_opt(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(time)
}

/// Writes a batch's rows on the writer's SQLite connection, inside the
/// transaction already begun on it.
pub(super) async fn write(c: &mut sqlx::SqliteConnection, batch: &Batch<'_>) -> Result<()> {
    let mut handle = c.lock_handle().await.context("locking the SQLite handle")?;
    let raw = handle.as_raw_handle();
    // SAFETY: the handle is locked out of sqlx's worker thread for as long as
    // `handle` lives, so nothing else uses the connection meanwhile; the
    // wrapper does not own the connection (it is not closed on drop) and is
    // dropped, finalizing its prepared statements, before the lock is
    // released at the end of this function.
    let conn = unsafe { rusqlite::Connection::from_handle(raw.as_ptr()) }
        .context("wrapping the SQLite handle")?;
    let written = rows(&conn, batch);
    drop(conn);
    drop(handle);
    written
}

fn rows(conn: &rusqlite::Connection, batch: &Batch<'_>) -> Result<()> {
    if !batch.touches.is_empty() {
        let mut stmt = conn.prepare_cached(
            "UPDATE chargers SET last_heartbeat_at = COALESCE($1, last_heartbeat_at), last_seen_at = $2 WHERE id = $3",
        )?;
        for (id, heartbeat, seen) in &batch.touches {
            stmt.execute(params![time_opt(*heartbeat), time(*seen), id])
                .context("recording heartbeats")?;
        }
    }
    if !batch.connectors.is_empty() {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO connectors (charger_id, connector_id, status, error_code, info, vendor_id, \
                 vendor_error_code, status_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (charger_id, connector_id) DO UPDATE SET status = excluded.status, \
                 error_code = excluded.error_code, info = excluded.info, vendor_id = excluded.vendor_id, \
                 vendor_error_code = excluded.vendor_error_code, status_at = excluded.status_at, \
                 updated_at = excluded.updated_at",
        )?;
        for s in &batch.connectors {
            stmt.execute(params![
                s.charger_id,
                s.connector_id,
                s.status,
                s.error_code,
                s.info,
                s.vendor_id,
                s.vendor_error_code,
                time(s.status_at),
                time(s.updated_at)
            ])
            .context("storing connector statuses")?;
        }
    }
    if !batch.readings.is_empty() {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO meter_readings (charger_id, connector_id, transaction_id, sampled_at, sample_count, \
                 samples, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )?;
        for r in &batch.readings {
            stmt.execute(params![
                r.charger_id,
                r.connector_id,
                r.transaction_id,
                time(r.sampled_at),
                r.samples.len() as i64,
                serde_json::to_string(&r.samples)?,
                time(r.received_at)
            ])
            .context("storing meter readings")?;
        }
    }
    if !batch.transactions.is_empty() {
        let mut stmt = conn.prepare_cached(
            "UPDATE transactions SET status = $1, meter_stop = $2, stop_time = $3, stop_reason = $4, \
                 stop_id_tag = $5, last_register_wh = $6, last_register_at = $7, energy_wh = $8, soc_start = $9, \
                 soc_last = $10, soc_last_at = $11, power_w_last = $12, updated_at = $13 WHERE id = $14",
        )?;
        for t in &batch.transactions {
            stmt.execute(params![
                t.status,
                t.meter_stop,
                time_opt(t.stop_time),
                t.stop_reason,
                t.stop_id_tag,
                t.last_register_wh,
                time_opt(t.last_register_at),
                t.energy_wh,
                t.soc_start,
                t.soc_last,
                time_opt(t.soc_last_at),
                t.power_w_last,
                time(t.updated_at),
                t.id
            ])
            .context("saving transactions")?;
        }
    }
    progress(conn, &batch.sessions, false)?;
    progress(conn, &batch.corrections, true)?;
    if !batch.anomalies.is_empty() {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO anomalies (charger_id, transaction_id, kind, detail, occurred_at) VALUES ($1, $2, $3, $4, $5)",
        )?;
        for a in &batch.anomalies {
            stmt.execute(params![
                a.charger_id,
                a.transaction_id,
                a.kind,
                a.detail.to_string(),
                time(a.occurred_at)
            ])
            .context("storing anomalies")?;
        }
    }
    if !batch.logs.is_empty() {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO ocpp_messages (charger_id, direction, message_type, message_id, action, payload, logged_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )?;
        for e in &batch.logs {
            stmt.execute(params![
                e.charger_id,
                e.direction.as_str(),
                e.message_type,
                e.message_id,
                e.action,
                e.payload,
                time(e.logged_at)
            ])
            .context("storing the message log")?;
        }
    }
    Ok(())
}

/// The charger's figures reach its sessions (see `sessions::progress_sessions`
/// for the rules, which this follows row by row).
fn progress(
    conn: &rusqlite::Connection,
    rows: &[&SessionProgress],
    corrections: bool,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let condition = if corrections {
        " AND status = 'completed' AND end_reason IN ('ConnectorAvailable', 'Superseded') \
          AND (payment_due = TRUE OR wallet_address IS NULL) \
          AND NOT EXISTS (SELECT 1 FROM payment_links WHERE payment_links.session_id = sessions.id)"
    } else {
        " AND status = 'active'"
    };
    let sql = format!(
        "UPDATE sessions SET energy_wh = $1, energy_reported = TRUE, cost_minor = $2, \
             last_reading_at = COALESCE($3, last_reading_at), battery_level = COALESCE($4, battery_level), \
             battery_level_start = COALESCE(battery_level_start, $5), \
             status = CASE WHEN $6 IS NULL THEN status ELSE 'completed' END, \
             end_time = COALESCE($6, end_time), end_reason = COALESCE($7, end_reason), updated_at = $8 \
         WHERE id = $9{condition}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    for p in rows {
        let (end_time, end_reason) = match &p.end {
            Some((at, reason)) => (Some(time(*at)), Some(reason.as_str())),
            None => (None, None),
        };
        stmt.execute(params![
            p.energy_wh,
            p.cost_minor,
            time_opt(p.last_reading_at),
            p.battery_level,
            p.battery_level_start,
            end_time,
            end_reason,
            time(p.updated_at),
            p.session_id
        ])
        .context("updating sessions from their transactions")?;
    }
    Ok(())
}
