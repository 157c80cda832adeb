//! The driver API (`/api/charging/...`): a driver's own sessions, from start
//! to history, statistics and dashboard.

use super::error::{ok, ApiError, ApiResult};
use super::extract::{AuthUser, Body, Query};
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

async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let session_id = body.string("sessionId")?;
    let session = state.engine.cancel(&user.caller(), &session_id).await?;
    Ok(ok(session_json(&session, Utc::now())))
}

async fn active(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let session = state.store.active_session(&user.id).await?;
    Ok(Json(
        json!({ "success": true, "session": session.map(|s| session_json(&s, Utc::now())) }),
    ))
}

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

async fn stats(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let sessions = state.store.user_sessions(&user.id).await?;
    Ok(ok(stats_json(&sessions, Utc::now())))
}

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
