//! The driver API (`/api/charging/...`): a driver's own sessions, from start
//! to history, statistics and dashboard.

use super::error::{ok, ApiError, ApiResult};
use super::extract::{AuthUser, Body, Query};
use super::openapi::{self as doc, ActiveSession, Dashboard, Data, Paged, Session, Stats};
use crate::engine::service::StartRequest;
use crate::engine::view::{session_json, stats_json, Period};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/charging/sessions/start", post(start))
        .route("/api/charging/sessions/active/update", put(update_active))
        .route("/api/charging/sessions/end", post(end))
        .route("/api/charging/sessions/cancel", post(cancel))
        .route("/api/charging/sessions/active", get(active))
        .route("/api/charging/sessions", get(list))
        .route("/api/charging/sessions/{id}", get(one))
        .route("/api/charging/stats", get(stats))
        .route("/api/charging/dashboard", get(dashboard))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(start, update_active, end, cancel, active, list, one, stats, dashboard))]
pub(crate) struct Doc;

#[utoipa::path(post, path = "/api/charging/sessions/start", operation_id = "startSession", tag = "driver", security(("bearer" = [])),
    request_body(content = doc::StartSession, example = json!({"stationId": "evliter-lagos-victoria-island", "connectorId": "connector-1", "batteryLevelStart": 45})),
    responses(
        (status = 201, description = "Started; at an online OCPP charger after it accepted RemoteStartTransaction", body = Data<Session>),
        (status = 400, description = "Invalid input, or `ACTIVE_SESSION_EXISTS`: the driver already has an active session", body = doc::ErrorBody),
        (status = 409, description = "The connector is busy, or the charger is offline or refused", body = doc::ErrorBody),
        (status = 504, description = "The charger did not answer in time", body = doc::ErrorBody),
    ))]
async fn start(
    State(state): State<AppState>,
    user: AuthUser,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request = StartRequest {
        user_id: user.id.clone(),
        station_id: body.string("stationId")?,
        connector_id: body
            .connector("connectorId")?
            .ok_or_else(|| ApiError::invalid("connectorId", "connectorId is required"))?,
        battery_level_start: Some(body.number("batteryLevelStart")?),
    };
    let session = state.engine.start(request).await?;
    Ok((StatusCode::CREATED, ok(session_json(&session, Utc::now()))))
}

#[utoipa::path(put, path = "/api/charging/sessions/active/update", operation_id = "updateActiveSession", tag = "driver", security(("bearer" = [])),
    request_body = doc::UpdateActive,
    responses(
        (status = 200, description = "The session with duration, average power and cost recomputed \
            (4.2 kWh at 165 NGN/kWh: 693 NGN)", body = Data<Session>,
         example = json!({"success": true, "data": {"id": "0b6f3c2e-3f0e-4a53-a2a4-7a1c0b4f5d21", "userId": "u-1",
            "stationId": "evliter-lagos-victoria-island", "stationName": "EVLiter Victoria Island Hub",
            "connectorId": "connector-1", "startTime": "2024-01-15T10:00:00.000Z", "endTime": null, "duration": 15,
            "energyDelivered": 4.2, "totalCost": 693, "currency": "NGN", "pricePerKWh": 165, "averagePower": 16.8,
            "batteryLevel": 52, "batteryLevelStart": 45, "status": "active", "stationRating": null, "source": "app",
            "chargerId": null, "transactionId": null, "endReason": null}})),
        (status = 400, description = "Invalid input, or `NO_ACTIVE_SESSION`", body = doc::ErrorBody),
    ))]
async fn update_active(
    State(state): State<AppState>,
    user: AuthUser,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let battery = body.number("batteryLevel")?;
    let energy = body.opt_number("energyDelivered")?;
    let session = state
        .engine
        .update_active(&user.id, battery, energy)
        .await?;
    Ok(ok(session_json(&session, Utc::now())))
}

#[utoipa::path(post, path = "/api/charging/sessions/end", operation_id = "endSession", tag = "driver", security(("bearer" = [])),
    request_body(content = doc::EndSession, example = json!({"sessionId": "0b6f3c2e-3f0e-4a53-a2a4-7a1c0b4f5d21", "batteryLevelEnd": 80, "stationRating": 5})),
    responses(
        (status = 200, description = "Completed. With no energy reported, energy is estimated from the battery rise \
            (45% to 80% of 60 kWh: 21 kWh, 3465 NGN at 165 NGN/kWh)", body = Data<Session>,
         example = json!({"success": true, "data": {"id": "0b6f3c2e-3f0e-4a53-a2a4-7a1c0b4f5d21", "userId": "u-1",
            "stationId": "evliter-lagos-victoria-island", "stationName": "EVLiter Victoria Island Hub",
            "connectorId": "connector-1", "startTime": "2024-01-15T10:00:00.000Z", "endTime": "2024-01-15T11:15:00.000Z",
            "duration": 75, "energyDelivered": 21, "totalCost": 3465, "currency": "NGN", "pricePerKWh": 165,
            "averagePower": 16.8, "batteryLevel": 80, "batteryLevelStart": 45, "status": "completed",
            "stationRating": 5, "source": "app", "chargerId": null, "transactionId": null, "endReason": "app"}})),
        (status = 202, description = "The charger was told to stop and its StopTransaction has not arrived yet", body = Data<Session>),
        (status = 400, description = "Invalid input, unknown or not active session", body = doc::ErrorBody),
        (status = 403, description = "Another user's session", body = doc::ErrorBody),
    ))]
async fn end(
    State(state): State<AppState>,
    user: AuthUser,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let session_id = body.string("sessionId")?;
    let battery_end = body.opt_number("batteryLevelEnd")?;
    let rating = body.opt_integer("stationRating")?;
    let (session, stopping) = state
        .engine
        .end(&user.caller(), &session_id, battery_end, rating)
        .await?;
    // 202 while the charger has not sent its StopTransaction yet.
    let status = if stopping {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, ok(session_json(&session, Utc::now()))))
}

#[utoipa::path(post, path = "/api/charging/sessions/cancel", operation_id = "cancelSession", tag = "driver", security(("bearer" = [])),
    request_body = doc::SessionRef,
    responses(
        (status = 200, description = "Cancelled, nothing billed", body = Data<Session>),
        (status = 400, description = "Unknown or not active session", body = doc::ErrorBody),
        (status = 403, description = "Another user's session", body = doc::ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let session_id = body.string("sessionId")?;
    let session = state.engine.cancel(&user.caller(), &session_id).await?;
    Ok(ok(session_json(&session, Utc::now())))
}

#[utoipa::path(get, path = "/api/charging/sessions/active", operation_id = "getActiveSession", tag = "driver", security(("bearer" = [])),
    responses((status = 200, description = "The driver's active session, or null", body = ActiveSession)))]
async fn active(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let session = state.store.active_session(&user.id).await?;
    Ok(Json(
        json!({ "success": true, "session": session.map(|s| session_json(&s, Utc::now())) }),
    ))
}

#[utoipa::path(get, path = "/api/charging/sessions/{id}", operation_id = "getSession", tag = "driver", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "One session", body = Data<Session>),
        (status = 403, description = "Another user's session", body = doc::ErrorBody),
        (status = 404, description = "No such session", body = doc::ErrorBody),
    ))]
async fn one(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let session = state
        .engine
        .owned_session(&user.caller(), &id)
        .await
        .map_err(|e| match e {
            crate::engine::EngineError::SessionNotFound => {
                ApiError::not_found("Charging session not found")
            }
            other => other.into(),
        })?;
    Ok(ok(session_json(&session, Utc::now())))
}

#[utoipa::path(get, path = "/api/charging/sessions", operation_id = "listSessions", tag = "driver", security(("bearer" = [])),
    params(
        ("filter" = Option<String>, Query, description = "`recent` (started in the last 7 days), `this-month` (the current UTC month) or `all-time` (default)"),
        ("limit" = Option<i64>, Query, description = "Default 50, at most 100 (larger is clamped)"),
        ("offset" = Option<i64>, Query, description = "Default 0"),
    ),
    responses(
        (status = 200, description = "The driver's sessions, newest first", body = Paged<Session>),
        (status = 400, description = "An unknown filter or a malformed number", body = doc::ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let period = match query.get("filter") {
        None | Some("") => Period::AllTime,
        Some(text) => Period::parse(text).ok_or_else(|| {
            ApiError::invalid("filter", "filter must be recent, this-month or all-time")
        })?,
    };
    let page = query.page(50, 100)?;
    let now = Utc::now();
    let sessions = state
        .store
        .user_sessions_page(&user.id, period.since(now), page)
        .await?;
    let items: Vec<Value> = sessions
        .items
        .iter()
        .map(|s| session_json(s, now))
        .collect();
    Ok(super::error::paged(&items, sessions.total, page))
}

#[utoipa::path(get, path = "/api/charging/stats", operation_id = "getStats", tag = "driver", security(("bearer" = [])),
    responses((status = 200, description = "Statistics over completed sessions; months ascending", body = Data<Stats>)))]
async fn stats(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let sessions = state.store.user_sessions(&user.id).await?;
    Ok(ok(stats_json(&sessions, Utc::now())))
}

#[utoipa::path(get, path = "/api/charging/dashboard", operation_id = "getDashboard", tag = "driver", security(("bearer" = [])),
    responses((status = 200, description = "The five newest sessions, statistics and the active session", body = Dashboard)))]
async fn dashboard(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let sessions = state.store.user_sessions(&user.id).await?;
    let now = Utc::now();
    let active = sessions
        .iter()
        .find(|s| s.status == crate::store::SESSION_ACTIVE)
        .map(|s| session_json(s, now));
    let recent: Vec<Value> = sessions
        .iter()
        .take(5)
        .map(|s| session_json(s, now))
        .collect();
    Ok(Json(
        json!({ "success": true, "sessions": recent, "stats": stats_json(&sessions, now), "activeSession": active }),
    ))
}
