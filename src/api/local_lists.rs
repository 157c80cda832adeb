//! Local authorization lists kept by the server: turned on per charger, and
//! each charger's version and sync state. The engine (`engine::local_list`)
//! builds, sends (SendLocalList) and reconciles (GetLocalListVersion) them.

use super::error::{ok, paged, ApiError, ApiResult};
use super::extract::{AdminUser, Body, Fields, Query};
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

/// `PUT /api/admin/stations/:id/local-list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub synced_at: Option<String>,
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
