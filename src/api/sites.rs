//! Site load management (`/api/admin/sites`): an operator defines a site
//! (chargers behind one grid connection, its limit in A per phase or kW),
//! assigns chargers to it and reads how the limit is shared. The engine
//! (`engine::sites`) decides the allocations and sends the profiles.

use super::error::{ok, ApiError, ApiResult};
use super::extract::{AdminUser, Body, Fields};
use super::openapi::{self as doc, Data};
use crate::engine::sites::{SiteInput, SiteView};
use crate::ocpp::time::format_ms;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/sites", get(list_sites))
        .route(
            "/api/admin/sites/{id}",
            put(put_site).get(get_site).delete(delete_site),
        )
        .route("/api/admin/sites/{id}/chargers", put(put_site_chargers))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list_sites, put_site, get_site, delete_site, put_site_chargers))]
pub(crate) struct Doc;

/// The largest limit a site may have (A per phase or kW).
const MAX_LIMIT: f64 = 100_000.0;

/// `PUT /api/admin/sites/:id`: the site's settings. `limit`, `minPerCar`
/// and `safeDefault` are in `unit`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutSiteRequest {
    /// Defaults to the site's id.
    pub name: Option<String>,
    /// `A` (amperes per phase) or `kW`.
    #[schema(example = "A")]
    pub unit: String,
    /// The grid connection's limit, more than 0 and at most 100,000.
    #[schema(example = 40)]
    pub limit: f64,
    /// 1 or 3 (default 3): converts amperes to power and is sent as `numberPhases`.
    pub phases: Option<i64>,
    /// Volts per phase, 100–1000 (default 230).
    pub voltage: Option<f64>,
    /// The least a car is given, 0 to `limit`; a car that cannot have it is paused.
    /// Default 6 A (or 6 A's power in kW).
    #[schema(example = 8)]
    pub min_per_car: Option<f64>,
    /// Each member charger's TxDefaultProfile, 0 to `limit`: what a car draws
    /// before its TxProfile reaches it. Default `minPerCar`.
    #[schema(example = 6)]
    pub safe_default: Option<f64>,
}

fn in_range(body: &Fields, name: &str, lo: f64, hi: f64) -> ApiResult<Option<f64>> {
    match body.opt_number(name)? {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::invalid(
            name,
            format!("{name} must be from {lo} to {hi}"),
        )),
        v => Ok(v),
    }
}

impl PutSiteRequest {
    fn read(body: &Fields) -> ApiResult<SiteInput> {
        let unit = body.string("unit")?;
        if unit != "A" && unit != "kW" {
            return Err(ApiError::invalid("unit", "unit must be A or kW"));
        }
        let limit = body.number("limit")?;
        if !(limit > 0.0 && limit <= MAX_LIMIT) {
            return Err(ApiError::invalid(
                "limit",
                format!("limit must be more than 0 and at most {MAX_LIMIT}"),
            ));
        }
        let phases = body.opt_integer("phases")?.unwrap_or(3);
        if phases != 1 && phases != 3 {
            return Err(ApiError::invalid("phases", "phases must be 1 or 3"));
        }
        let voltage = in_range(body, "voltage", 100.0, 1000.0)?.unwrap_or(230.0);
        let default_min = if unit == "A" {
            6.0
        } else {
            (6.0 * phases as f64 * voltage / 100.0).floor() / 10.0
        };
        let min_per_car =
            in_range(body, "minPerCar", 0.0, limit)?.unwrap_or_else(|| default_min.min(limit));
        let safe_default = in_range(body, "safeDefault", 0.0, limit)?.unwrap_or(min_per_car);
        let name = body.opt_string("name")?;
        if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Err(ApiError::invalid(
                "name",
                "name must be at most 200 characters",
            ));
        }
        Ok(SiteInput {
            id: String::new(),
            name: name.unwrap_or_default(),
            unit,
            limit,
            phases,
            voltage,
            min_per_car,
            safe_default,
        })
    }
}

/// `PUT /api/admin/sites/:id/chargers`: the site's members, replacing those before.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutSiteChargersRequest {
    /// Charger identities (at most 1,000); each must exist and belong to no other site.
    pub charger_ids: Vec<String>,
}

/// One running transaction's share of its site.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteAllocation {
    pub transaction_id: i64,
    pub charger_id: String,
    pub connector_id: i64,
    /// What the charger may let the car draw now, in the site's unit: the
    /// last limit it accepted, or a raise being sent, or the safe default
    /// before any TxProfile.
    pub allocated: f64,
    /// What the last re-balance decided for it.
    pub target: f64,
    /// The car's last measured power (Power.Active.Import, W).
    pub measured_power_w: Option<f64>,
    /// False while it draws well below its share (the rest goes to others).
    pub drawing: bool,
}

/// A site, its members and how its limit is shared now.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteState {
    pub id: String,
    pub name: String,
    /// `A` (per phase) or `kW`.
    pub unit: String,
    pub limit: f64,
    pub phases: i64,
    pub voltage: f64,
    pub min_per_car: f64,
    pub safe_default: f64,
    pub charger_ids: Vec<String>,
    /// Each running transaction of the site's chargers, oldest first.
    pub allocations: Vec<SiteAllocation>,
    /// The sum of `allocated`.
    pub allocated_sum: f64,
    /// The safe default of each member connector without a car (a car that
    /// starts there draws it before its TxProfile arrives). `allocatedSum +
    /// reserved` never exceeds `limit`, but for a moment after a stop.
    pub reserved: f64,
    pub last_rebalanced_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&SiteView> for SiteState {
    fn from(v: &SiteView) -> Self {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        SiteState {
            id: v.site.id.clone(),
            name: v.site.name.clone(),
            unit: v.site.unit.clone(),
            limit: v.site.limit_value,
            phases: v.site.phases,
            voltage: v.site.voltage,
            min_per_car: v.site.min_per_car,
            safe_default: v.site.safe_default,
            charger_ids: v.chargers.clone(),
            allocations: v
                .allocations
                .iter()
                .map(|a| SiteAllocation {
                    transaction_id: a.transaction_id,
                    charger_id: a.charger_id.clone(),
                    connector_id: a.connector_id,
                    allocated: round(a.allocated),
                    target: round(a.target),
                    measured_power_w: a.measured_power_w,
                    drawing: a.drawing,
                })
                .collect(),
            allocated_sum: round(v.allocated_sum),
            reserved: round(v.reserved),
            last_rebalanced_at: v.last_rebalanced_at.map(format_ms),
            created_at: format_ms(v.site.created_at),
            updated_at: format_ms(v.site.updated_at),
        }
    }
}

/// What `DELETE /api/admin/sites/:id` answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteDeleted {
    pub id: String,
    pub deleted: bool,
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn check_id(id: &str) -> ApiResult<()> {
    let fine = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fine {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "id",
            "a site id is 1 to 64 letters, digits, '-', '_' or '.'",
        ))
    }
}

#[utoipa::path(get, path = "/api/admin/sites", operation_id = "listSites", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every site with its members and allocations, by id", body = Data<Vec<SiteState>>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn list_sites(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Value>> {
    let sites = state.engine.site_views().await?;
    let items: Vec<SiteState> = sites.iter().map(SiteState::from).collect();
    Ok(ok(to_json(&items)))
}

#[utoipa::path(put, path = "/api/admin/sites/{id}", operation_id = "putSite", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The site's id: 1 to 64 letters, digits, '-', '_' or '.'")),
    request_body(content = PutSiteRequest, example = json!({"name": "Depot", "unit": "A", "limit": 40, "phases": 3, "voltage": 230, "minPerCar": 8, "safeDefault": 6})),
    responses(
        (status = 200, description = "Updated: the safe default is sent again if it changed, and the site re-balanced", body = Data<SiteState>),
        (status = 201, description = "Created (no chargers yet)", body = Data<SiteState>),
        (status = 400, description = "Invalid id, unit, limit, phases, voltage, minPerCar, safeDefault or name; nothing is changed", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn put_site(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_id(&id)?;
    let mut input = PutSiteRequest::read(&body)?;
    if input.name.is_empty() {
        input.name = id.clone();
    }
    input.id = id;
    let (view, created) = state.engine.put_site(input).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, ok(to_json(&SiteState::from(&view)))))
}

#[utoipa::path(get, path = "/api/admin/sites/{id}", operation_id = "getSite", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The site's id")),
    responses(
        (status = 200, description = "The site, each running transaction's allocation, their sum and when it was last re-balanced", body = Data<SiteState>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
        (status = 404, description = "No such site", body = doc::ErrorBody),
    ))]
async fn get_site(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let view = state.engine.site_view(&id).await?;
    Ok(ok(to_json(&SiteState::from(&view))))
}

#[utoipa::path(delete, path = "/api/admin/sites/{id}", operation_id = "deleteSite", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The site's id")),
    responses(
        (status = 200, description = "Deleted; the site's profiles were cleared on its connected chargers (ClearChargingProfile) and forgotten", body = Data<SiteDeleted>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
        (status = 404, description = "No such site", body = doc::ErrorBody),
    ))]
async fn delete_site(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    state.engine.delete_site(&id).await?;
    Ok(ok(to_json(&SiteDeleted { id, deleted: true })))
}

#[utoipa::path(put, path = "/api/admin/sites/{id}/chargers", operation_id = "putSiteChargers", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The site's id")),
    request_body(content = PutSiteChargersRequest, example = json!({"chargerIds": ["CP-1", "CP-2"]})),
    responses(
        (status = 200, description = "The members as given: new ones were sent the safe default (TxDefaultProfile) and their running \
            transactions joined the balance; those left out had the site's profiles cleared; the site was re-balanced", body = Data<SiteState>),
        (status = 400, description = "`chargerIds` missing or not a list of charger ids; nothing is changed", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
        (status = 404, description = "No such site or charger; nothing is changed", body = doc::ErrorBody),
        (status = 409, description = "`CHARGER_IN_OTHER_SITE`: a charger belongs to another site; nothing is changed", body = doc::ErrorBody),
    ))]
async fn put_site_chargers(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let ids = match body.raw("chargerIds") {
        Some(Value::Array(items)) if items.len() <= 1000 => items
            .iter()
            .map(|v| match v.as_str() {
                Some(s) if !s.trim().is_empty() && s.len() <= 48 => Ok(s.to_owned()),
                _ => Err(ApiError::invalid(
                    "chargerIds",
                    "chargerIds must hold charger ids (non-empty strings of at most 48 characters)",
                )),
            })
            .collect::<ApiResult<Vec<String>>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "chargerIds",
                "chargerIds holds at most 1000 chargers",
            ))
        }
        Some(_) => return Err(ApiError::invalid("chargerIds", "chargerIds must be a list")),
        None => return Err(ApiError::invalid("chargerIds", "chargerIds is required")),
    };
    let view = state.engine.set_site_chargers(&id, ids).await?;
    Ok(ok(to_json(&SiteState::from(&view))))
}
