//! Local authorization lists kept by the server: turned on per charger, and
//! each charger's version and sync state. The engine (`engine::local_list`)
//! builds, sends (SendLocalList) and reconciles (GetLocalListVersion) them.

use super::error::{ok, paged, ApiError, ApiResult};
use super::extract::{AdminUser, Body, Fields, Query};
use super::openapi::{self as doc, Data, Paged};
use crate::ocpp::time::format_ms;
use crate::state::AppState;
use crate::store::LocalListRecord;
use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/admin/stations/{id}/local-list",
            put(put_local_list).get(get_local_list),
        )
        .route("/api/admin/local-lists", get(list_local_lists))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(put_local_list, get_local_list, list_local_lists))]
pub(crate) struct Doc;

/// `PUT /api/admin/stations/:id/local-list`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalListRequest {
    /// true: the server manages the charger's list (asks the charger whether
    /// it takes one, then sends it in full); false: it stops updating it.
    pub enabled: bool,
}

impl LocalListRequest {
    fn read(body: &Fields) -> ApiResult<Self> {
        match body.raw("enabled") {
            Some(Value::Bool(enabled)) => Ok(LocalListRequest { enabled: *enabled }),
            Some(_) => Err(ApiError::invalid(
                "enabled",
                "enabled must be true or false",
            )),
            None => Err(ApiError::invalid("enabled", "enabled is required")),
        }
    }
}

/// A charger's list as the server keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalListView {
    pub charger_id: String,
    pub enabled: bool,
    /// The most entries the charger takes in one list.
    pub max_length: i64,
    /// The list version the charger last confirmed.
    pub version: i64,
    /// The entries the charger holds (as last confirmed).
    pub size: usize,
    /// synced, pending (changes not sent yet: offline or unanswered),
    /// failed or not_supported.
    pub sync_state: String,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub synced_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&LocalListRecord> for LocalListView {
    fn from(l: &LocalListRecord) -> Self {
        let size = serde_json::from_str::<Vec<Value>>(&l.entries)
            .map(|e| e.len())
            .unwrap_or(0);
        LocalListView {
            charger_id: l.charger_id.clone(),
            enabled: l.enabled == 1,
            max_length: l.max_length,
            version: l.version,
            size,
            sync_state: l.sync_state.clone(),
            last_error: l.last_error.clone(),
            synced_at: l.synced_at.map(format_ms),
            updated_at: format_ms(l.updated_at),
        }
    }
}

fn view(l: &LocalListRecord) -> Json<Value> {
    ok(serde_json::to_value(LocalListView::from(l)).unwrap_or(Value::Null))
}

#[utoipa::path(put, path = "/api/admin/stations/{id}/local-list", operation_id = "putLocalList", tag = "local lists", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity")),
    request_body(content = LocalListRequest, example = json!({"enabled": true})),
    responses(
        (status = 200, description = "Enabled: the charger's LocalAuthListEnabled and lengths read with GetConfiguration, the full list sent; or disabled", body = Data<LocalListView>),
        (status = 400, description = "`enabled` missing or not a boolean", body = doc::ErrorBody),
        (status = 404, description = "Unknown charger", body = doc::ErrorBody),
        (status = 409, description = "`CHARGER_OFFLINE`, or `LOCAL_LIST_NOT_SUPPORTED`", body = doc::ErrorBody),
        (status = 504, description = "The charger did not answer in time", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn put_local_list(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let request = LocalListRequest::read(&body)?;
    let list = state.engine.enable_local_list(&id, request.enabled).await?;
    Ok(view(&list))
}

#[utoipa::path(get, path = "/api/admin/stations/{id}/local-list", operation_id = "getLocalList", tag = "local lists", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity")),
    responses(
        (status = 200, description = "The charger's list version, size and sync state", body = Data<LocalListView>),
        (status = 404, description = "No list kept for this charger", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn get_local_list(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let list = state
        .store
        .local_list(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Charger {id} has no local list kept")))?;
    Ok(view(&list))
}

#[utoipa::path(get, path = "/api/admin/local-lists", operation_id = "listLocalLists", tag = "local lists", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, description = "Default 100, at most 1000"), ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "Every kept list's version and sync state, by charger", body = Paged<LocalListView>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET /api/admin/local-lists?limit=&offset=`: every charger's version and
/// sync state, by charger.
async fn list_local_lists(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = query.page(100, 1000)?;
    let lists = state.store.local_lists_page(page).await?;
    let items: Vec<LocalListView> = lists.items.iter().map(LocalListView::from).collect();
    Ok(paged(&items, lists.total, page))
}
