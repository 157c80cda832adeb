//! Reservations: operators reserve any connector for any idTag
//! (`/api/admin/reservations`), drivers reserve one for themselves with
//! their own idTag (`/api/charging/reservations`). The engine
//! (`engine::reservations`) allocates the reservationId, sends ReserveNow and
//! CancelReservation, and keeps each reservation's status.

use super::error::{ok, paged, ApiError, ApiResult};
use super::extract::{AdminUser, AuthUser, Body, Fields, Query, MAX_CONNECTOR};
use super::openapi::{self as doc, Data, Paged};
use crate::engine::reservations::{ReserveRequest, MAX_RESERVATION_HOURS};
use crate::engine::service::{ocpp_connector_number, Caller};
use crate::ocpp::time::format_ms;
use crate::state::AppState;
use crate::store::ReservationRecord;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/admin/reservations",
            post(admin_create_reservation).get(admin_list_reservations),
        )
        .route(
            "/api/admin/reservations/{id}",
            get(admin_get_reservation).delete(admin_cancel_reservation),
        )
        .route(
            "/api/charging/reservations",
            post(driver_create_reservation).get(driver_list_reservations),
        )
        .route(
            "/api/charging/reservations/{id}",
            get(driver_get_reservation).delete(driver_cancel_reservation),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    admin_create_reservation,
    admin_list_reservations,
    admin_get_reservation,
    admin_cancel_reservation,
    driver_create_reservation,
    driver_list_reservations,
    driver_get_reservation,
    driver_cancel_reservation
))]
pub(crate) struct Doc;

/// Every status a reservation can have.
const STATUSES: [&str; 9] = [
    "pending",
    "accepted",
    "faulted",
    "occupied",
    "rejected",
    "unavailable",
    "used",
    "cancelled",
    "expired",
];

/// `POST /api/admin/reservations`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminReservationRequest {
    pub charger_id: String,
    /// 0 reserves any connector (chargers that support it).
    pub connector_id: i64,
    pub id_tag: String,
    /// RFC 3339, in the future, at most 24 hours ahead.
    #[schema(format = DateTime)]
    pub expiry_date: String,
}

impl AdminReservationRequest {
    fn read(body: &Fields) -> ApiResult<Self> {
        let connector_id = body
            .opt_integer("connectorId")?
            .ok_or_else(|| ApiError::invalid("connectorId", "connectorId is required"))?;
        if !(0..=MAX_CONNECTOR).contains(&connector_id) {
            return Err(ApiError::invalid(
                "connectorId",
                format!("connectorId must be 0 to {MAX_CONNECTOR}"),
            ));
        }
        Ok(AdminReservationRequest {
            charger_id: body.string("chargerId")?,
            connector_id,
            id_tag: body.string("idTag")?,
            expiry_date: body.string("expiryDate")?,
        })
    }
}

/// `POST /api/charging/reservations`: the driver's own idTag is used.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriverReservationRequest {
    pub station_id: String,
    /// 1 to 1000 (`"connector-1"` is read as 1).
    #[schema(value_type = doc::ConnectorRef)]
    pub connector_id: i64,
    /// How long the connector is held, 1 to 1440.
    pub minutes: i64,
}

impl DriverReservationRequest {
    fn read(body: &Fields) -> ApiResult<Self> {
        let station_id = body.string("stationId")?;
        let connector_id = body
            .connector("connectorId")?
            .ok_or_else(|| ApiError::invalid("connectorId", "connectorId is required"))?;
        let connector_id = ocpp_connector_number(&connector_id)
            .filter(|n| *n <= MAX_CONNECTOR)
            .ok_or_else(|| {
                ApiError::invalid(
                    "connectorId",
                    "connectorId must name a charger connector, e.g. 1 or connector-1",
                )
            })?;
        let max = MAX_RESERVATION_HOURS * 60;
        let minutes = body
            .opt_integer("minutes")?
            .ok_or_else(|| ApiError::invalid("minutes", "minutes is required"))?;
        if !(1..=max).contains(&minutes) {
            return Err(ApiError::invalid(
                "minutes",
                format!("minutes must be 1 to {max}"),
            ));
        }
        Ok(DriverReservationRequest {
            station_id,
            connector_id,
            minutes,
        })
    }
}

/// A reservation as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationView {
    /// The OCPP reservationId.
    pub id: i64,
    pub charger_id: String,
    pub connector_id: i64,
    pub id_tag: String,
    pub user_id: Option<String>,
    #[schema(format = DateTime)]
    pub expiry_date: String,
    /// pending, accepted, faulted, occupied, rejected, unavailable, used,
    /// cancelled or expired.
    pub status: String,
    /// The transaction that used it.
    pub transaction_id: Option<i64>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&ReservationRecord> for ReservationView {
    fn from(r: &ReservationRecord) -> Self {
        ReservationView {
            id: r.id,
            charger_id: r.charger_id.clone(),
            connector_id: r.connector_id,
            id_tag: r.id_tag.clone(),
            user_id: r.user_id.clone(),
            expiry_date: format_ms(r.expiry_date),
            status: r.status.clone(),
            transaction_id: r.transaction_id,
            created_at: format_ms(r.created_at),
            updated_at: format_ms(r.updated_at),
        }
    }
}

fn view(r: &ReservationRecord) -> Json<Value> {
    ok(serde_json::to_value(ReservationView::from(r)).unwrap_or(Value::Null))
}

fn reservation_id(text: &str) -> ApiResult<i64> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("Reservation {text} not found")))
}

fn status_filter(query: &Query) -> ApiResult<Option<&str>> {
    match query.get("status").filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) if STATUSES.contains(&s) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(
            "status",
            format!("status must be one of {}", STATUSES.join(", ")),
        )),
    }
}

#[utoipa::path(post, path = "/api/admin/reservations", operation_id = "createReservation", tag = "reservations", security(("bearer" = [])),
    request_body(content = AdminReservationRequest, example = json!({"chargerId": "CP001", "connectorId": 1, "idTag": "RFID0042", "expiryDate": "2027-01-01T12:00:00Z"})),
    responses(
        (status = 201, description = "Allocated a reservationId, sent ReserveNow, the charger accepted", body = Data<ReservationView>),
        (status = 400, description = "Invalid input (an expiry in the past or over 24 hours ahead, a bad connector)", body = doc::ErrorBody),
        (status = 404, description = "Unknown charger or idTag", body = doc::ErrorBody),
        (status = 409, description = "`CHARGER_OFFLINE`; `CONNECTOR_RESERVED` (a live reservation holds it, nothing sent); `CHARGER_REJECTED` with `details.reservationId` and `details.status` (faulted, occupied, rejected, unavailable), the refusal kept", body = doc::ErrorBody),
        (status = 504, description = "No answer in time: the reservation stays `pending` (the charger may hold it) until cancelled or expired", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn admin_create_reservation(
    State(state): State<AppState>,
    _admin: AdminUser,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request = AdminReservationRequest::read(&body)?;
    let expiry_date = chrono::DateTime::parse_from_rfc3339(&request.expiry_date)
        .map_err(|_| ApiError::invalid("expiryDate", "expiryDate must be an RFC 3339 time"))?
        .with_timezone(&Utc);
    let reservation = state
        .engine
        .reserve(ReserveRequest {
            charger_id: request.charger_id,
            connector_id: request.connector_id,
            id_tag: request.id_tag,
            expiry_date,
        })
        .await?;
    Ok((StatusCode::CREATED, view(&reservation)))
}

#[utoipa::path(get, path = "/api/admin/reservations", operation_id = "listReservations", tag = "reservations", security(("bearer" = [])),
    params(("chargerId" = Option<String>, Query, description = "Only this charger's"), ("userId" = Option<String>, Query, description = "Only this user's"), ("status" = Option<String>, Query, description = "pending, accepted, faulted, occupied, rejected, unavailable, used, cancelled or expired"), ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"), ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "Reservations, newest first", body = Paged<ReservationView>),
        (status = 400, description = "An unknown status", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET /api/admin/reservations?chargerId=&userId=&status=&limit=&offset=`, newest first.
async fn admin_list_reservations(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = query.page(100, 1000)?;
    let status = status_filter(&query)?;
    let list = state
        .store
        .reservations_page(
            query.get("chargerId").filter(|c| !c.is_empty()),
            query.get("userId").filter(|u| !u.is_empty()),
            status,
            page,
        )
        .await?;
    let items: Vec<ReservationView> = list.items.iter().map(ReservationView::from).collect();
    Ok(paged(&items, list.total, page))
}

#[utoipa::path(get, path = "/api/admin/reservations/{id}", operation_id = "getReservation", tag = "reservations", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The OCPP reservationId")),
    responses(
        (status = 200, description = "One reservation", body = Data<ReservationView>),
        (status = 404, description = "No such reservation", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn admin_get_reservation(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = state
        .engine
        .owned_reservation(&admin.caller(), reservation_id(&id)?)
        .await?;
    Ok(view(&r))
}

#[utoipa::path(delete, path = "/api/admin/reservations/{id}", operation_id = "cancelReservation", tag = "reservations", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The OCPP reservationId")),
    responses(
        (status = 200, description = "CancelReservation sent; `cancelled`", body = Data<ReservationView>),
        (status = 404, description = "No such reservation", body = doc::ErrorBody),
        (status = 409, description = "Over already (used, cancelled, expired, refused), or the charger is offline", body = doc::ErrorBody),
        (status = 504, description = "The charger did not answer in time; nothing changed", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn admin_cancel_reservation(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = state
        .engine
        .cancel_reservation(&admin.caller(), reservation_id(&id)?)
        .await?;
    Ok(view(&r))
}

#[utoipa::path(post, path = "/api/charging/reservations", operation_id = "reserve", tag = "reservations", security(("bearer" = [])),
    request_body(content = DriverReservationRequest, example = json!({"stationId": "CP001", "connectorId": "connector-1", "minutes": 30})),
    responses(
        (status = 201, description = "Reserved with the driver's own idTag (one is made if they have none)", body = Data<ReservationView>),
        (status = 400, description = "Invalid input (an expiry in the past or over 24 hours ahead, a bad connector)", body = doc::ErrorBody),
        (status = 404, description = "Unknown charger or idTag", body = doc::ErrorBody),
        (status = 409, description = "`CHARGER_OFFLINE`; `CONNECTOR_RESERVED` (a live reservation holds it, nothing sent); `CHARGER_REJECTED` with `details.reservationId` and `details.status` (faulted, occupied, rejected, unavailable), the refusal kept", body = doc::ErrorBody),
        (status = 504, description = "No answer in time: the reservation stays `pending` (the charger may hold it) until cancelled or expired", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn driver_create_reservation(
    State(state): State<AppState>,
    user: AuthUser,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request = DriverReservationRequest::read(&body)?;
    let reservation = state
        .engine
        .reserve_for_driver(
            &user.id,
            &request.station_id,
            request.connector_id,
            request.minutes,
        )
        .await?;
    Ok((StatusCode::CREATED, view(&reservation)))
}

#[utoipa::path(get, path = "/api/charging/reservations", operation_id = "listMyReservations", tag = "reservations", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "pending, accepted, faulted, occupied, rejected, unavailable, used, cancelled or expired"), ("limit" = Option<i64>, Query, description = "Default 50, at most 100"), ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "The driver's own reservations, newest first", body = Paged<ReservationView>),
        (status = 400, description = "An unknown status", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
/// `GET /api/charging/reservations?status=&limit=&offset=`: the caller's own.
async fn driver_list_reservations(
    State(state): State<AppState>,
    user: AuthUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = query.page(50, 100)?;
    let status = status_filter(&query)?;
    let list = state
        .store
        .reservations_page(None, Some(&user.id), status, page)
        .await?;
    let items: Vec<ReservationView> = list.items.iter().map(ReservationView::from).collect();
    Ok(paged(&items, list.total, page))
}

fn driver(user: &AuthUser) -> Caller {
    // On the driver routes everyone acts as a driver: an admin's own
    // reservations are theirs, others' are reached through /api/admin.
    Caller {
        user_id: user.id.clone(),
        is_admin: false,
    }
}

#[utoipa::path(get, path = "/api/charging/reservations/{id}", operation_id = "getMyReservation", tag = "reservations", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The OCPP reservationId")),
    responses(
        (status = 200, description = "One of the driver's reservations", body = Data<ReservationView>),
        (status = 403, description = "Another user's", body = doc::ErrorBody),
        (status = 404, description = "No such reservation", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn driver_get_reservation(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = state
        .engine
        .owned_reservation(&driver(&user), reservation_id(&id)?)
        .await?;
    Ok(view(&r))
}

#[utoipa::path(delete, path = "/api/charging/reservations/{id}", operation_id = "cancelMyReservation", tag = "reservations", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The OCPP reservationId")),
    responses(
        (status = 200, description = "CancelReservation sent; `cancelled`", body = Data<ReservationView>),
        (status = 403, description = "Another user's", body = doc::ErrorBody),
        (status = 404, description = "No such reservation", body = doc::ErrorBody),
        (status = 409, description = "Over already, or the charger is offline", body = doc::ErrorBody),
        (status = 504, description = "The charger did not answer in time; nothing changed", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn driver_cancel_reservation(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = state
        .engine
        .cancel_reservation(&driver(&user), reservation_id(&id)?)
        .await?;
    Ok(view(&r))
}
