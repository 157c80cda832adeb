//! The operator API (`/api/admin/...`, admin role): stations with their
//! tariff and live state, users, idTags, commands to chargers, and what an
//! operator inspects (message log, anomalies, sessions that look stuck, how
//! much is stored).

use super::error::{ok, ApiError, ApiResult};
use super::extract::{AdminUser, Body, Query};
use super::openapi::{self as doc, Data, Paged};
use crate::charger::CommandError;
use crate::engine::money::{parse_currency, parse_price_micros, price_json};
use crate::engine::view::session_json;
use crate::ocpp::time::format_ms;
use crate::state::AppState;
use crate::store::{IdTagRecord, RegistrationStatus, StationRecord, UserRecord};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/stations", get(list_stations))
        .route(
            "/api/admin/stations/{id}",
            put(put_station).get(get_station),
        )
        .route(
            "/api/admin/stations/{id}/registration",
            put(put_registration),
        )
        .route("/api/admin/stations/{id}/commands/{action}", post(command))
        .route("/api/admin/stations/{id}/messages", get(messages))
        .route("/api/admin/stations/{id}/transactions", get(transactions))
        .route("/api/admin/users", get(list_users))
        .route("/api/admin/users/{id}", put(put_user))
        .route("/api/admin/id-tags", get(list_id_tags))
        .route(
            "/api/admin/id-tags/{id_tag}",
            put(put_id_tag).get(get_id_tag),
        )
        .route("/api/admin/anomalies", get(anomalies))
        .route("/api/admin/sessions", get(sessions))
        .route("/api/admin/ingest", get(ingest))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_stations,
    get_station,
    put_station,
    put_registration,
    command,
    messages,
    transactions,
    list_users,
    put_user,
    list_id_tags,
    get_id_tag,
    put_id_tag,
    anomalies,
    sessions,
    ingest
))]
pub(crate) struct Doc;

/// The highest price per kWh an operator may set, in units of any currency:
/// far above any real tariff, even in currencies of tiny units, and low
/// enough that the largest session (1,000 kWh) costs no more than the payment
/// API's bound on amounts.
pub const MAX_PRICE_PER_KWH: i64 = 1_000_000;

/// A battery's capacity in kWh: from an e-bike's to above any vehicle's.
const BATTERY_CAPACITY_KWH: std::ops::RangeInclusive<f64> = 0.1..=1000.0;

fn check_station_id(id: &str) -> ApiResult<()> {
    // A station id doubles as its charger's OCPP identity.
    crate::charger::handshake::validate_identity(id).map_err(|why| ApiError::invalid("id", why))
}

/// A station's tariff, its charger's registration and its live state.
async fn station_json(state: &AppState, id: &str) -> ApiResult<Option<Value>> {
    let station = state.store.station(id).await?;
    let charger = state.store.charger(id).await?;
    if station.is_none() && charger.is_none() {
        return Ok(None);
    }
    let connectors: Vec<Value> = state
        .store
        .connectors(id)
        .await?
        .into_iter()
        .map(|c| {
            json!({"connectorId": c.connector_id, "status": c.status, "errorCode": c.error_code, "info": c.info,
                   "vendorId": c.vendor_id, "vendorErrorCode": c.vendor_error_code, "statusAt": format_ms(c.status_at)})
        })
        .collect();
    let connection = state.registry.presence(id).await?;
    Ok(Some(json!({
        "id": id,
        "name": station.as_ref().map(|s| s.name.clone()),
        "pricePerKWh": station.as_ref().map(|s| price_json(s.price_micros)),
        "currency": station.as_ref().map(|s| s.currency.clone()),
        "isOcppCharger": charger.is_some(),
        "hasOcppPassword": charger.as_ref().is_some_and(|c| c.password_hash.is_some()),
        "registrationStatus": charger.as_ref().map(|c| c.registration_status.as_str()),
        "vendor": charger.as_ref().and_then(|c| c.vendor.clone()),
        "model": charger.as_ref().and_then(|c| c.model.clone()),
        "serialNumber": charger.as_ref().and_then(|c| c.charge_point_serial_number.clone()),
        "firmwareVersion": charger.as_ref().and_then(|c| c.firmware_version.clone()),
        "connected": connection.is_some(),
        "connectedSince": connection.as_ref().map(|c| format_ms(c.connected_at)),
        "lastHeartbeat": charger.as_ref().and_then(|c| c.last_heartbeat_at.map(format_ms)),
        "lastSeen": charger.as_ref().and_then(|c| c.last_seen_at.map(format_ms)),
        "connectors": connectors,
    })))
}

#[utoipa::path(get, path = "/api/admin/stations", operation_id = "listStations", tag = "admin", security(("bearer" = [])),
    params(("q" = Option<String>, Query, description = "Case-insensitive, anywhere in a station's id or name"), ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"),
        ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "Stations and chargers in id order, with tariff, registration and live state", body = Paged<doc::Station>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn list_stations(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = query.page(100, 1000)?;
    let search = query.get("q").and_then(crate::store::like_pattern);
    let ids = state
        .store
        .station_ids_page(search.as_deref(), page)
        .await?;
    let mut items = Vec::with_capacity(ids.items.len());
    for id in &ids.items {
        if let Some(v) = station_json(&state, id).await? {
            items.push(v);
        }
    }
    Ok(super::error::paged(&items, ids.total, page))
}

#[utoipa::path(get, path = "/api/admin/stations/{id}", operation_id = "getStation", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Station id, which is also its charger's OCPP identity")),
    responses(
        (status = 200, description = "One station", body = Data<doc::Station>),
        (status = 404, description = "Neither a station nor a charger", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn get_station(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    station_json(&state, &id)
        .await?
        .map(ok)
        .ok_or_else(|| ApiError::not_found(format!("Station {id} not found")))
}

#[utoipa::path(put, path = "/api/admin/stations/{id}", operation_id = "putStation", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Station id, which is also its charger's OCPP identity")),
    request_body(content = doc::PutStation, example = json!({"name": "Depot 1", "pricePerKWh": 0.35, "currency": "EUR", "ocppPassword": "a-16-to-40-char-secret"})),
    responses(
        (status = 200, description = "The station as stored", body = Data<doc::Station>),
        (status = 400, description = "Invalid id, name, price, currency or password", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn put_station(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    check_station_id(&id)?;
    let name = body.string("name")?;
    if name.chars().count() > 200 {
        return Err(ApiError::invalid(
            "name",
            "name must be at most 200 characters",
        ));
    }
    let price = body
        .raw("pricePerKWh")
        .ok_or_else(|| ApiError::invalid("pricePerKWh", "pricePerKWh is required"))?;
    let price_micros = parse_price_micros(price)
        .filter(|m| *m <= MAX_PRICE_PER_KWH * 1_000_000)
        .ok_or_else(|| {
            ApiError::invalid(
                "pricePerKWh",
                format!("pricePerKWh must be a number from 0 to {MAX_PRICE_PER_KWH} with at most 6 decimals"),
            )
        })?;
    let currency = parse_currency(&body.string("currency")?)
        .map_err(|e| ApiError::invalid("currency", e.to_string()))?;
    let password = body.opt_secret("ocppPassword")?;
    if let Some(p) = &password {
        // OCPP's AuthorizationKey is 16 to 40 characters; allow a little slack below.
        if p.chars().count() < 8 || p.chars().count() > 64 {
            return Err(ApiError::invalid(
                "ocppPassword",
                "ocppPassword must be 8 to 64 characters",
            ));
        }
    }
    let now = Utc::now();
    state
        .store
        .upsert_station(&StationRecord {
            id: id.clone(),
            name,
            price_micros,
            currency,
            created_at: now,
            updated_at: now,
        })
        .await?;
    if let Some(p) = password {
        // Stored hashed, never returned.
        state
            .store
            .provision_charger(
                &id,
                None,
                Some(Some(crate::charger::auth::hash_password(&p))),
            )
            .await?;
    }
    Ok(ok(station_json(&state, &id).await?.unwrap_or(Value::Null)))
}

#[utoipa::path(put, path = "/api/admin/stations/{id}/registration", operation_id = "putRegistration", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity")),
    request_body(content = doc::PutRegistration, example = json!({"status": "Accepted"})),
    responses(
        (status = 200, description = "The charger's registration as stored (its next BootNotification is answered so)", body = Data<doc::Station>),
        (status = 400, description = "Invalid id or status", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn put_registration(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    check_station_id(&id)?;
    let status = RegistrationStatus::parse(&body.string("status")?).ok_or_else(|| {
        ApiError::invalid("status", "status must be Accepted, Pending or Rejected")
    })?;
    state
        .store
        .provision_charger(&id, Some(status), None)
        .await?;
    Ok(ok(station_json(&state, &id).await?.unwrap_or(Value::Null)))
}

/// Sends any server-to-charger OCPP 1.6 command and answers the charger's response.
#[utoipa::path(post, path = "/api/admin/stations/{id}/commands/{action}", operation_id = "sendCommand", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity"),
           ("action" = String, Path, description = "A server-to-charger OCPP 1.6 action, e.g. `Reset`, `RemoteStartTransaction`, `GetConfiguration`")),
    request_body(content = Object, description = "The action's OCPP request payload, validated against its official schema", example = json!({"type": "Soft"})),
    responses(
        (status = 200, description = "The charger's answer (its CALLRESULT payload)", body = Data<Object>, example = json!({"success": true, "data": {"status": "Accepted"}})),
        (status = 400, description = "The payload does not match the action's schema", body = doc::ErrorBody),
        (status = 404, description = "`UNKNOWN_ACTION`: not a server-to-charger OCPP 1.6 action", body = doc::ErrorBody),
        (status = 409, description = "`CHARGER_OFFLINE`, or `CHARGER_BUSY` (too many commands waiting)", body = doc::ErrorBody),
        (status = 502, description = "The charger answered a CALLERROR or an answer that breaks the schema, or disconnected", body = doc::ErrorBody),
        (status = 504, description = "`CHARGER_TIMEOUT`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn command(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((id, action)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    if !crate::ocpp::action::is_server_to_charger(&action) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_ACTION",
            format!("{action} is not a server-to-charger OCPP 1.6 command"),
        ));
    }
    let answer = state.registry.call(&id, &action, Value::Object(body.0)).await.map_err(|e| match e {
        CommandError::Offline => ApiError::new(StatusCode::CONFLICT, "CHARGER_OFFLINE", format!("Charger {id} is not connected")),
        CommandError::Busy => ApiError::new(StatusCode::CONFLICT, "CHARGER_BUSY", format!("Charger {id} has too many commands waiting")),
        CommandError::Timeout => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "CHARGER_TIMEOUT", format!("Charger {id} did not answer in time")),
        CommandError::ConnectionLost => ApiError::new(StatusCode::BAD_GATEWAY, "CHARGER_DISCONNECTED", format!("Charger {id} disconnected before answering")),
        CommandError::InvalidRequest(error) => ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("Payload does not match the {action} schema: {}", error.description))
            .with_details(json!({ "ocppErrorCode": error.code.as_str(), "errors": error.details.get("errors").cloned().unwrap_or(Value::Null) })),
        CommandError::Rejected { code, description, details } => ApiError::new(StatusCode::BAD_GATEWAY, "CHARGER_ERROR", format!("Charger answered CALLERROR {code}: {description}"))
            .with_details(json!({ "errorCode": code, "errorDescription": description, "errorDetails": details })),
        CommandError::InvalidResponse(why) => ApiError::new(StatusCode::BAD_GATEWAY, "CHARGER_BAD_ANSWER", format!("Charger's answer does not match the schema: {why}")),
        CommandError::UnknownAction(a) => ApiError::new(StatusCode::NOT_FOUND, "UNKNOWN_ACTION", format!("{a} is not a server-to-charger OCPP 1.6 command")),
    })?;
    Ok(ok(answer))
}

#[utoipa::path(get, path = "/api/admin/stations/{id}/messages", operation_id = "listMessages", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity"), ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"),
        ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "The charger's OCPP-J frames, both directions, newest first", body = Paged<crate::store::LoggedMessage>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn messages(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = query.page(100, 1000)?;
    let log = state.store.messages(&id, page).await?;
    Ok(super::error::paged(&log.items, log.total, page))
}

#[utoipa::path(get, path = "/api/admin/stations/{id}/transactions", operation_id = "listTransactions", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The charger's OCPP identity"),
           ("status" = Option<String>, Query, description = "`active`, `stopped` or `closed`"), ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"),
        ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "The charger's OCPP transactions, newest first", body = Paged<crate::store::TransactionRecord>),
        (status = 400, description = "An unknown status", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn transactions(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = query.page(100, 1000)?;
    let status = query.get("status").filter(|s| !s.is_empty());
    if status.is_some_and(|s| {
        ![
            crate::store::TX_ACTIVE,
            crate::store::TX_STOPPED,
            crate::store::TX_CLOSED,
        ]
        .contains(&s)
    }) {
        return Err(ApiError::invalid(
            "status",
            "status must be active, stopped or closed",
        ));
    }
    let txs = state.store.transactions_page(&id, status, page).await?;
    Ok(super::error::paged(&txs.items, txs.total, page))
}

#[utoipa::path(get, path = "/api/admin/anomalies", operation_id = "listAnomalies", tag = "admin", security(("bearer" = [])),
    params(("chargerId" = Option<String>, Query, description = "Only this charger's"),
           ("transactionId" = Option<i64>, Query, description = "Only this transaction's"),
           ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"),
           ("offset" = Option<i64>, Query, description = "Default 0")),
    responses(
        (status = 200, description = "What chargers sent that was answered but is not right, newest first", body = Paged<crate::store::Anomaly>),
        (status = 400, description = "A transactionId that is not a whole number", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn anomalies(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = query.page(100, 1000)?;
    let transaction_id = match query.get("transactionId").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(t.trim().parse::<i64>().map_err(|_| {
            ApiError::invalid("transactionId", "transactionId must be a whole number")
        })?),
    };
    let list = state
        .store
        .anomalies_page(
            query.get("chargerId").filter(|c| !c.is_empty()),
            transaction_id,
            page,
        )
        .await?;
    Ok(super::error::paged(&list.items, list.total, page))
}

/// Active sessions, each with `looksStuck`: an OCPP session whose charger is
/// offline or silent for an hour, or a remote start still waiting.
#[utoipa::path(get, path = "/api/admin/sessions", operation_id = "listActiveSessions", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every active session, each with `looksStuck`", body = Data<Vec<doc::AdminSession>>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn sessions(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Value>> {
    let now = Utc::now();
    let mut out = Vec::new();
    for s in state.store.active_sessions().await? {
        let mut v = session_json(&s, now);
        let stuck = match &s.charger_id {
            Some(charger) => {
                state.registry.presence(charger).await?.is_none()
                    || now - s.updated_at > chrono::Duration::hours(1)
                    || s.transaction_id.is_none()
            }
            None => now - s.updated_at > chrono::Duration::hours(12),
        };
        v["looksStuck"] = json!(stuck);
        v["updatedAt"] = json!(format_ms(s.updated_at));
        out.push(v);
    }
    Ok(ok(Value::Array(out)))
}

#[utoipa::path(get, path = "/api/admin/users", operation_id = "listUsers", tag = "admin", security(("bearer" = [])),
    params(("q" = Option<String>, Query, description = "Case-insensitive, anywhere in a user's id, name or email"), ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"),
        ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "Users in id order", body = Paged<doc::User>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = query.page(100, 1000)?;
    let search = query.get("q").and_then(crate::store::like_pattern);
    let users = state.store.users_page(search.as_deref(), page).await?;
    let items: Vec<Value> = users
        .items
        .iter()
        .map(super::auth::routes::user_json)
        .collect();
    Ok(super::error::paged(&items, users.total, page))
}

#[utoipa::path(put, path = "/api/admin/users/{id}", operation_id = "putUser", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id, 1 to 128 characters")),
    request_body(content = doc::PutUser, example = json!({"name": "Fleet car 42", "email": "car42@example.com", "role": "driver", "batteryCapacity": 77})),
    responses(
        (status = 200, description = "The user as stored", body = Data<doc::User>),
        (status = 400, description = "Invalid id, email, role or capacity", body = doc::ErrorBody),
        (status = 409, description = "`EMAIL_TAKEN`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn put_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    if id.trim().is_empty() || id.len() > 128 {
        return Err(ApiError::invalid(
            "id",
            "user id must be 1 to 128 characters",
        ));
    }
    let name = body.string("name")?;
    let email = body.opt_string("email")?.map(|e| e.to_lowercase());
    if let Some(e) = &email {
        if !e.contains('@') || e.len() > 254 {
            return Err(ApiError::invalid("email", "email is not a valid address"));
        }
        if state
            .store
            .user_by_email(e)
            .await?
            .is_some_and(|other| other.id != id)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "EMAIL_TAKEN",
                "Another user has this email",
            ));
        }
    }
    let role = body.string("role")?;
    if !super::auth::ROLES.contains(&role.as_str()) {
        return Err(ApiError::invalid("role", "role must be driver or admin"));
    }
    let capacity = match body.opt_number("batteryCapacity")? {
        None => None,
        Some(kwh) if BATTERY_CAPACITY_KWH.contains(&kwh) => Some((kwh * 1000.0).round() as i64),
        Some(_) => {
            return Err(ApiError::invalid(
                "batteryCapacity",
                format!(
                    "batteryCapacity must be between {} and {} kWh",
                    BATTERY_CAPACITY_KWH.start(),
                    BATTERY_CAPACITY_KWH.end()
                ),
            ))
        }
    };
    let existing = state.store.user(&id).await?;
    let user = UserRecord {
        id: id.clone(),
        email,
        name,
        role,
        password_hash: None,
        battery_capacity_wh: capacity,
        created_at: existing
            .map(|u| u.created_at)
            .unwrap_or_else(crate::ocpp::time::now_ms),
    };
    state.store.upsert_user(&user).await.map_err(|e| {
        // Two requests racing for one email: the unique index decides.
        if crate::store::is_unique_violation(&e) {
            ApiError::new(
                StatusCode::CONFLICT,
                "EMAIL_TAKEN",
                "Another user has this email",
            )
        } else {
            ApiError::internal(e)
        }
    })?;
    let stored = state
        .store
        .user(&id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("user vanished after upsert"))?;
    Ok(ok(super::auth::routes::user_json(&stored)))
}

pub(crate) fn id_tag_json(t: &IdTagRecord) -> Value {
    json!({"idTag": t.id_tag, "userId": t.user_id, "status": t.status, "expiryDate": t.expiry_date.map(format_ms),
           "parentIdTag": t.parent_id_tag, "createdAt": format_ms(t.created_at)})
}

/// `GET /api/admin/id-tags?userId=&q=&limit=&offset=`: in tag order.
#[utoipa::path(get, path = "/api/admin/id-tags", operation_id = "listIdTags", tag = "admin", security(("bearer" = [])),
    params(("userId" = Option<String>, Query, description = "Only this user's"), ("q" = Option<String>, Query, description = "Case-insensitive, anywhere in the tag"), ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"),
        ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "idTags in tag order", body = Paged<doc::IdTag>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn list_id_tags(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = query.page(100, 1000)?;
    let tags = state
        .store
        .id_tags_page(
            query.get("userId").filter(|u| !u.is_empty()),
            query
                .get("q")
                .and_then(crate::store::like_pattern)
                .as_deref(),
            page,
        )
        .await?;
    let items: Vec<Value> = tags.items.iter().map(id_tag_json).collect();
    Ok(super::error::paged(&items, tags.total, page))
}

#[utoipa::path(get, path = "/api/admin/id-tags/{id_tag}", operation_id = "getIdTag", tag = "admin", security(("bearer" = [])),
    params(("id_tag" = String, Path, description = "The idTag, compared case-insensitively")),
    responses(
        (status = 200, description = "One idTag", body = Data<doc::IdTag>),
        (status = 404, description = "No such idTag", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn get_id_tag(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(tag): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = state
        .store
        .id_tag(&tag)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("idTag {tag} not found")))?;
    Ok(ok(id_tag_json(&t)))
}

#[utoipa::path(put, path = "/api/admin/id-tags/{id_tag}", operation_id = "putIdTag", tag = "admin", security(("bearer" = [])),
    params(("id_tag" = String, Path, description = "The idTag (OCPP CiString20), stored and sent as entered")),
    request_body(content = doc::PutIdTag, example = json!({"userId": "u-42", "status": "Accepted", "expiryDate": "2027-01-01T00:00:00Z"})),
    responses(
        (status = 200, description = "The idTag as stored", body = Data<doc::IdTag>),
        (status = 400, description = "Invalid tag, status or expiry", body = doc::ErrorBody),
        (status = 404, description = "No such user", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn put_id_tag(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(tag): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    // OCPP 1.6 idTokens are CiString20.
    if tag.is_empty() || tag.chars().count() > 20 || tag.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "idTag",
            "idTag must be 1 to 20 characters",
        ));
    }
    let user_id = body.string("userId")?;
    let status = body
        .opt_string("status")?
        .unwrap_or_else(|| "Accepted".into());
    if !["Accepted", "Blocked", "Expired", "Invalid"].contains(&status.as_str()) {
        return Err(ApiError::invalid(
            "status",
            "status must be Accepted, Blocked, Expired or Invalid",
        ));
    }
    let expiry = match body.opt_string("expiryDate")? {
        None => None,
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(&text)
                .map_err(|_| {
                    ApiError::invalid("expiryDate", "expiryDate must be an RFC 3339 time")
                })?
                .with_timezone(&Utc),
        ),
    };
    let parent = body.opt_string("parentIdTag")?;
    if state.store.user(&user_id).await?.is_none() {
        return Err(ApiError::not_found(format!("User {user_id} not found")));
    }
    let existing = state.store.id_tag(&tag).await?;
    let record = IdTagRecord {
        id_tag: tag.clone(),
        user_id: Some(user_id),
        status,
        expiry_date: expiry,
        parent_id_tag: parent,
        created_at: existing
            .map(|t| t.created_at)
            .unwrap_or_else(crate::ocpp::time::now_ms),
    };
    state.store.upsert_id_tag(&record).await?;
    // Server-kept local lists follow the change.
    state.engine.id_tags_changed();
    let stored = state.store.id_tag(&tag).await?.unwrap_or(record);
    Ok(ok(id_tag_json(&stored)))
}

/// How much is stored: distinct readings, sampled values, logged frames.
/// Queued writes (the message log lags behind the answers) are committed
/// first, so a frame counted missing here was dropped, not merely late.
#[utoipa::path(get, path = "/api/admin/ingest", operation_id = "getIngestCounts", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "How much is stored, after queued writes are committed", body = Data<crate::store::IngestCounts>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn ingest(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Value>> {
    state.store.flush().await?;
    let counts = state.store.ingest_counts().await?;
    Ok(ok(
        serde_json::to_value(counts).map_err(anyhow::Error::from)?
    ))
}
