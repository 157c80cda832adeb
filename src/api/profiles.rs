//! Charging profiles kept by the server (`/api/admin/stations/:id/charging-profiles`)
//! and the charger's composite schedule. The engine (`engine::profiles`)
//! stores, sends (SetChargingProfile), re-sends and clears them.

use super::error::{ok, ApiError, ApiResult};
use super::extract::{AdminUser, Body, Fields, Query, MAX_CONNECTOR};
use super::openapi::{self as doc, Data};
use crate::engine::profiles::ProfileRequest;
use crate::ocpp::time::format_ms;
use crate::state::AppState;
use crate::store::ChargingProfileRecord;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/admin/stations/{id}/charging-profiles",
            post(create_charging_profile).get(list_charging_profiles),
        )
        .route(
            "/api/admin/stations/{id}/charging-profiles/{profile_id}",
            delete(clear_charging_profile),
        )
        .route(
            "/api/admin/stations/{id}/composite-schedule",
            get(composite_schedule),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    create_charging_profile,
    list_charging_profiles,
    clear_charging_profile,
    composite_schedule
))]
pub(crate) struct Doc;

/// `POST /api/admin/stations/:id/charging-profiles`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargingProfileRequest {
    /// 0 is the whole charger.
    pub connector_id: i64,
    /// OCPP 1.6 csChargingProfiles without chargingProfileId (the server
    /// allocates it): stackLevel, chargingProfilePurpose,
    /// chargingProfileKind, chargingSchedule, and transactionId for a
    /// TxProfile.
    #[schema(value_type = Object)]
    pub charging_profile: serde_json::Map<String, Value>,
}

impl ChargingProfileRequest {
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
        let charging_profile = match body.raw("chargingProfile") {
            Some(Value::Object(map)) => map.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "chargingProfile",
                    "chargingProfile must be an object",
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    "chargingProfile",
                    "chargingProfile is required",
                ))
            }
        };
        Ok(ChargingProfileRequest {
            connector_id,
            charging_profile,
        })
    }
}

/// A stored profile with the charger's answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargingProfileView {
    /// The OCPP chargingProfileId.
    pub id: i64,
    pub charger_id: String,
    pub connector_id: i64,
    pub purpose: String,
    pub stack_level: i64,
    pub transaction_id: Option<i64>,
    /// The csChargingProfiles sent.
    pub charging_profile: Value,
    /// pending (not answered yet), accepted, rejected, not_supported or failed.
    pub status: String,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
    #[schema(format = DateTime)]
    pub answered_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&ChargingProfileRecord> for ChargingProfileView {
    fn from(p: &ChargingProfileRecord) -> Self {
        let mut profile: Value = serde_json::from_str(&p.profile).unwrap_or(Value::Null);
        if profile.is_object() {
            profile["chargingProfileId"] = json!(p.id);
        }
        ChargingProfileView {
            id: p.id,
            charger_id: p.charger_id.clone(),
            connector_id: p.connector_id,
            purpose: p.purpose.clone(),
            stack_level: p.stack_level,
            transaction_id: p.transaction_id,
            charging_profile: profile,
            status: p.status.clone(),
            last_error: p.last_error.clone(),
            sent_at: p.sent_at.map(format_ms),
            answered_at: p.answered_at.map(format_ms),
            created_at: format_ms(p.created_at),
            updated_at: format_ms(p.updated_at),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[utoipa::path(post, path = "/api/admin/stations/{id}/charging-profiles", operation_id = "setChargingProfile", tag = "charging profiles", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity")),
    request_body(content = ChargingProfileRequest, example = json!({"connectorId": 0, "chargingProfile": {"stackLevel": 0,
        "chargingProfilePurpose": "ChargePointMaxProfile", "chargingProfileKind": "Absolute",
        "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}})),
    responses(
        (status = 201, description = "Stored and sent; the charger's answer in `status`", body = Data<ChargingProfileView>),
        (status = 202, description = "Stored, `pending`: the charger is offline or did not answer; sent when it is back", body = Data<ChargingProfileView>),
        (status = 400, description = "Not a valid csChargingProfiles (checked against the SetChargingProfile schema), a bad connector", body = doc::ErrorBody),
        (status = 404, description = "Unknown charger", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// 201 with the charger's answer in `status`, or 202 with `status: pending`
/// when the charger is offline or did not answer: the profile is kept and
/// sent when the charger is back.
async fn create_charging_profile(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request = ChargingProfileRequest::read(&body)?;
    let (profile, answered) = state
        .engine
        .set_charging_profile(ProfileRequest {
            charger_id: id,
            connector_id: request.connector_id,
            profile: request.charging_profile,
        })
        .await?;
    let status = if answered {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, ok(to_json(&ChargingProfileView::from(&profile)))))
}

#[utoipa::path(get, path = "/api/admin/stations/{id}/charging-profiles", operation_id = "listChargingProfiles", tag = "charging profiles", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity")),
    responses(
        (status = 200, description = "The charger's stored profiles with the charger's answers", body = Data<Vec<ChargingProfileView>>),
        (status = 404, description = "Unknown charger", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn list_charging_profiles(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let list = state.engine.charging_profiles(&id).await?;
    let items: Vec<ChargingProfileView> = list.iter().map(ChargingProfileView::from).collect();
    Ok(ok(to_json(&items)))
}

/// What `DELETE …/charging-profiles/:profileId` answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClearedProfileView {
    pub profile: ChargingProfileView,
    /// The charger's ClearChargingProfile status: Accepted or Unknown.
    pub charger_answer: String,
}

#[utoipa::path(delete, path = "/api/admin/stations/{id}/charging-profiles/{profile_id}", operation_id = "clearChargingProfile", tag = "charging profiles", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity"), ("profile_id" = i64, Path, description = "The OCPP chargingProfileId")),
    responses(
        (status = 200, description = "ClearChargingProfile sent and the profile removed", body = Data<ClearedProfileView>),
        (status = 404, description = "No such profile", body = doc::ErrorBody),
        (status = 409, description = "The charger is offline; nothing changed", body = doc::ErrorBody),
        (status = 504, description = "The charger did not answer in time; nothing changed", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn clear_charging_profile(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((id, profile_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let profile_id: i64 = profile_id
        .parse()
        .map_err(|_| ApiError::not_found(format!("Charging profile {profile_id} not found")))?;
    let (profile, answer) = state.engine.clear_charging_profile(&id, profile_id).await?;
    Ok(ok(to_json(&ClearedProfileView {
        profile: ChargingProfileView::from(&profile),
        charger_answer: answer,
    })))
}

#[utoipa::path(get, path = "/api/admin/stations/{id}/composite-schedule", operation_id = "getCompositeSchedule", tag = "charging profiles", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity"), ("connectorId" = i64, Query, description = "0 to 1000"), ("duration" = i64, Query, description = "Seconds, 1 to 604800"),
        ("chargingRateUnit" = Option<String>, Query, description = "A or W")),
    responses(
        (status = 200, description = "GetCompositeSchedule sent; the charger's answer", body = Data<Object>),
        (status = 400, description = "A missing or bad parameter", body = doc::ErrorBody),
        (status = 409, description = "The charger is offline", body = doc::ErrorBody),
        (status = 504, description = "The charger did not answer in time", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET …/composite-schedule?connectorId=&duration=&chargingRateUnit=`:
/// GetCompositeSchedule, and the charger's answer as `data`.
async fn composite_schedule(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    query: Query,
) -> ApiResult<Json<Value>> {
    let connector_id = match query.get("connectorId") {
        None | Some("") => return Err(ApiError::invalid("connectorId", "connectorId is required")),
        Some(_) => query.integer("connectorId", 0, 0, i64::MAX)?,
    };
    if connector_id > MAX_CONNECTOR {
        return Err(ApiError::invalid(
            "connectorId",
            format!("connectorId must be 0 to {MAX_CONNECTOR}"),
        ));
    }
    let duration = match query.get("duration") {
        None | Some("") => return Err(ApiError::invalid("duration", "duration is required")),
        Some(_) => query.integer("duration", 0, 1, i64::MAX)?,
    };
    if duration > 7 * 86_400 {
        return Err(ApiError::invalid(
            "duration",
            "duration must be 1 to 604800 seconds",
        ));
    }
    let unit = query.get("chargingRateUnit").filter(|u| !u.is_empty());
    if unit.is_some_and(|u| u != "A" && u != "W") {
        return Err(ApiError::invalid(
            "chargingRateUnit",
            "chargingRateUnit must be A or W",
        ));
    }
    let answer = state
        .engine
        .composite_schedule(&id, connector_id, duration, unit)
        .await?;
    Ok(ok(answer))
}
