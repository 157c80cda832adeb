//! Reservations (OCPP 1.6, Reservation profile: ReserveNow,
//! CancelReservation) kept by the server.
//!
//! The server allocates the reservationId (the row's id), stores the
//! reservation `pending`, sends ReserveNow and keeps the charger's answer as
//! its status (`accepted`, `faulted`, `occupied`, `rejected`,
//! `unavailable`). A live reservation (`pending` or `accepted`) ends `used`
//! when a StartTransaction names it ([`why_not_used`] decides, inside the
//! StartTransaction's write), `cancelled` through CancelReservation, or
//! `expired` by the sweeper ([`Engine::expire_reservations`]) once its
//! expiry has passed. Every change is conditional on the reservation being
//! live, so whichever comes first decides and the others change nothing.

use super::service::{command_error, Caller, Engine, EngineError};
use crate::charger::CommandError;
use crate::ocpp::time::{format_ms, now_ms, truncate_ms};
use crate::store::*;
use chrono::{DateTime, Utc};
use serde_json::json;

/// How far ahead a reservation may end.
pub const MAX_RESERVATION_HOURS: i64 = 24;

/// What a reservation is for.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    pub charger_id: String,
    /// 0 reserves any connector of the charger (if it supports that).
    pub connector_id: i64,
    pub id_tag: String,
    pub expiry_date: DateTime<Utc>,
}

/// Why a StartTransaction naming `reservation` does not use it (`None`: it
/// does). The charger enforces reservations; the server only records which
/// one a transaction used, and flags what does not fit.
pub fn why_not_used(
    tx: &NewTransaction,
    reservation: Option<&ReservationRecord>,
    id_tag_status: &str,
) -> Option<&'static str> {
    let Some(r) = reservation else {
        return Some("no such reservation");
    };
    if r.charger_id != tx.charger_id {
        return Some("another charger's reservation");
    }
    if !reservation_is_live(&r.status) {
        return Some("the reservation is no longer live");
    }
    if r.connector_id != 0 && r.connector_id != tx.connector_id {
        return Some("the reservation is for another connector");
    }
    if !r.id_tag.eq_ignore_ascii_case(&tx.id_tag) {
        return Some("the reservation is for another idTag");
    }
    if id_tag_status != "Accepted" {
        return Some("the idTag was not accepted");
    }
    None
}

/// The stored status for a ReserveNow answer.
fn status_of_answer(answer: &str) -> Option<&'static str> {
    Some(match answer {
        "Accepted" => RESERVATION_ACCEPTED,
        "Faulted" => "faulted",
        "Occupied" => "occupied",
        "Rejected" => "rejected",
        "Unavailable" => "unavailable",
        _ => return None,
    })
}

impl Engine {
    /// Reserves a connector for an idTag: stored `pending` with a new
    /// reservationId, sent with ReserveNow, and kept with the charger's
    /// answer. A charger that refuses leaves the reservation with its answer
    /// and is a 409 (`CHARGER_REJECTED`, with `reservationId` and `status`);
    /// one that does not answer in time leaves it `pending` (the charger may
    /// hold it: it can be cancelled, or it expires).
    pub async fn reserve(&self, request: ReserveRequest) -> Result<ReservationRecord, EngineError> {
        let now = now_ms();
        let expiry = truncate_ms(request.expiry_date);
        if expiry <= now {
            return Err(EngineError::invalid(
                "expiryDate",
                "expiryDate must be in the future",
            ));
        }
        if expiry > now + chrono::Duration::hours(MAX_RESERVATION_HOURS) {
            return Err(EngineError::invalid(
                "expiryDate",
                format!("expiryDate must be within {MAX_RESERVATION_HOURS} hours"),
            ));
        }
        if self.store.charger(&request.charger_id).await?.is_none() {
            return Err(EngineError::NotFound(format!(
                "Charger {} not found",
                request.charger_id
            )));
        }
        let tag =
            self.store.id_tag(&request.id_tag).await?.ok_or_else(|| {
                EngineError::NotFound(format!("idTag {} not found", request.id_tag))
            })?;
        if self.registry.presence(&request.charger_id).await?.is_none() {
            return Err(EngineError::ChargerOffline(request.charger_id));
        }
        let reservation = self
            .store
            .insert_reservation(&NewReservation {
                charger_id: request.charger_id.clone(),
                connector_id: request.connector_id,
                id_tag: tag.id_tag.clone(),
                parent_id_tag: tag.parent_id_tag.clone(),
                user_id: tag.user_id.clone(),
                expiry_date: expiry,
                created_at: now,
            })
            .await?
            .ok_or_else(|| EngineError::Conflict {
                code: "CONNECTOR_RESERVED",
                message: format!(
                    "Connector {} of {} is already reserved",
                    request.connector_id, request.charger_id
                ),
                details: json!({"field": "connectorId"}),
            })?;
        let mut payload = json!({
            "connectorId": reservation.connector_id,
            "expiryDate": format_ms(reservation.expiry_date),
            "idTag": reservation.id_tag,
            "reservationId": reservation.id,
        });
        if let Some(parent) = &reservation.parent_id_tag {
            payload["parentIdTag"] = json!(parent);
        }
        let answer = self
            .registry
            .call(&reservation.charger_id, "ReserveNow", payload)
            .await;
        let id = reservation.id;
        let charger_id = reservation.charger_id.clone();
        match answer {
            Ok(answer) => {
                let said = answer["status"].as_str().unwrap_or("");
                let status = status_of_answer(said).ok_or_else(|| {
                    EngineError::ChargerBadAnswer(format!("ReserveNow answered {said:?}"))
                })?;
                if status != RESERVATION_PENDING {
                    self.store
                        .end_live_reservation(id, status, now_ms())
                        .await?;
                }
                let stored = self.store.reservation(id).await?.unwrap_or(reservation);
                if status == RESERVATION_ACCEPTED {
                    Ok(stored)
                } else {
                    Err(EngineError::Conflict {
                        code: "CHARGER_REJECTED",
                        message: format!("Charger refused the reservation: {said}"),
                        details: json!({"reservationId": id, "status": stored.status}),
                    })
                }
            }
            Err(CommandError::Offline) => {
                // It went away between the check and the call: nothing was
                // sent, nothing is kept.
                self.store.delete_pending_reservation(id).await?;
                Err(EngineError::ChargerOffline(charger_id))
            }
            Err(e @ (CommandError::Timeout | CommandError::ConnectionLost)) => {
                tracing::warn!(charger = %charger_id, reservation = id, "ReserveNow unanswered: the reservation stays pending: {e}");
                Err(command_error(e, &charger_id, "reserve"))
            }
            Err(e @ CommandError::Rejected { .. }) => {
                self.store
                    .end_live_reservation(id, "rejected", now_ms())
                    .await?;
                Err(command_error(e, &charger_id, "reserve"))
            }
            Err(e) => {
                self.store.delete_pending_reservation(id).await?;
                Err(command_error(e, &charger_id, "reserve"))
            }
        }
    }

    /// A driver's reservation of a connector for `minutes`, with their own
    /// idTag (one is made for a driver who has none, as for a remote start).
    pub async fn reserve_for_driver(
        &self,
        user_id: &str,
        station_id: &str,
        connector_id: i64,
        minutes: i64,
    ) -> Result<ReservationRecord, EngineError> {
        if self.store.charger(station_id).await?.is_none() {
            return Err(EngineError::NotFound(format!(
                "Charger {station_id} not found"
            )));
        }
        if self.registry.presence(station_id).await?.is_none() {
            return Err(EngineError::ChargerOffline(station_id.to_owned()));
        }
        self.store.ensure_user(user_id).await?;
        let id_tag = self.id_tag_for(user_id).await?;
        self.reserve(ReserveRequest {
            charger_id: station_id.to_owned(),
            connector_id,
            id_tag,
            expiry_date: now_ms() + chrono::Duration::minutes(minutes),
        })
        .await
    }

    /// A reservation the caller may see: a driver's own, or any for an admin.
    pub async fn owned_reservation(
        &self,
        caller: &Caller,
        id: i64,
    ) -> Result<ReservationRecord, EngineError> {
        let r = self
            .store
            .reservation(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("Reservation {id} not found")))?;
        if !caller.is_admin && r.user_id.as_deref() != Some(caller.user_id.as_str()) {
            return Err(EngineError::Forbidden(
                "This reservation belongs to another user".into(),
            ));
        }
        Ok(r)
    }

    /// Cancels a live reservation with CancelReservation. The charger's
    /// `Rejected` means it holds no such reservation: either way the
    /// reservation no longer holds the connector and is `cancelled`. An
    /// offline or silent charger changes nothing (409, 504).
    pub async fn cancel_reservation(
        &self,
        caller: &Caller,
        id: i64,
    ) -> Result<ReservationRecord, EngineError> {
        let r = self.owned_reservation(caller, id).await?;
        if !reservation_is_live(&r.status) {
            return Err(EngineError::Conflict {
                code: "RESERVATION_NOT_LIVE",
                message: format!("Reservation {id} is {}", r.status),
                details: json!({"status": r.status}),
            });
        }
        let answer = self
            .registry
            .call(
                &r.charger_id,
                "CancelReservation",
                json!({ "reservationId": id }),
            )
            .await
            .map_err(|e| command_error(e, &r.charger_id, "cancel the reservation"))?;
        tracing::info!(charger = %r.charger_id, reservation = id, answer = %answer["status"], "reservation cancelled");
        self.store
            .end_live_reservation(id, RESERVATION_CANCELLED, now_ms())
            .await?;
        Ok(self.store.reservation(id).await?.unwrap_or(r))
    }

    /// Marks the live reservations whose expiry has passed by `now`
    /// `expired`; returns their ids. Reads only the due ones. A plain
    /// function: the loop that calls it is in `app.rs`.
    pub async fn expire_reservations(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<i64>> {
        let mut expired = Vec::new();
        for r in self.store.live_reservations_expired_by(now).await? {
            if self
                .store
                .end_live_reservation(r.id, RESERVATION_EXPIRED, now)
                .await?
            {
                tracing::info!(charger = %r.charger_id, reservation = r.id, "reservation expired");
                expired.push(r.id);
            }
        }
        Ok(expired)
    }
}
