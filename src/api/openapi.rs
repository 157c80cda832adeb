//! The OpenAPI 3.1 document and the interactive reference.
//!
//! The document is generated from the code: every handler carries a
//! `#[utoipa::path]` annotation next to its route, each resource module
//! gathers its handlers in a `Doc`, and [`document`] merges them. The shapes
//! below are the bodies as the handlers write them; `tests/openapi.rs` checks
//! that every route in the source is in the document, that every operation
//! in the document answers, and that real answers validate against their
//! schemas, so the document cannot drift from the server.
//!
//! `GET /api/openapi.json` serves the document; `GET /docs/` serves Swagger
//! UI, vendored in `assets/swagger-ui/` and compiled into the binary.

#![allow(dead_code)] // the shapes are read by the schema generator, not by code

use crate::state::AppState;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(openapi_json))
        .route("/docs", get(docs_redirect))
        .route("/docs/", get(docs_page))
        .route("/docs/swagger-ui-bundle.js", get(docs_script))
        .route("/docs/swagger-ui.css", get(docs_style))
}

/// The whole document: every resource module's operations, the shared
/// shapes they use, the bearer scheme, and the error envelope as every
/// operation's `default` answer.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Root::openapi();
    doc.merge(super::Doc::openapi());
    doc.merge(super::auth::routes::Doc::openapi());
    doc.merge(super::charging::Doc::openapi());
    doc.merge(super::events::Doc::openapi());
    doc.merge(super::admin::Doc::openapi());
    doc.merge(super::payments::Doc::openapi());
    doc.merge(super::reservations::Doc::openapi());
    doc.merge(super::profiles::Doc::openapi());
    doc.merge(super::local_lists::Doc::openapi());
    doc.merge(super::console_api::Doc::openapi());
    doc.merge(super::console::Doc::openapi());
    doc.merge(super::sites::Doc::openapi());
    doc.merge(crate::charger::handshake::Doc::openapi());
    doc.merge(ReferenceDoc::openapi());
    Envelope.modify(&mut doc);
    doc
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "csms",
        description = "Charging station management system: the driver, payment and operator REST API, \
                       live events, probes and metrics. Chargers connect over OCPP 1.6J at `/ocpp/{chargerId}`.\n\n\
                       Every JSON answer is an envelope: `{\"success\": true, \"data\": ...}` on success \
                       (lists add `pagination`), and `{\"success\": false, \"error\", \"code\", \"details\"}` \
                       on failure, with the HTTP status that fits (400 names the field at fault in `details.field`).\n\n\
                       Authenticate with `Authorization: Bearer <JWT>` from `/api/auth/login`, `/api/auth/register` \
                       or `csms token`. Money is in the station's currency, in major units rounded to its minor unit.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "driver", description = "A driver's own charging sessions"),
        (name = "payments", description = "Sessions paid after a balance check, payment links, wallets"),
        (name = "admin", description = "Operators (role admin): stations, chargers, users, idTags, commands"),
        (name = "reservations", description = "Reservations kept by the server: ReserveNow, CancelReservation, use and expiry"),
        (name = "charging profiles", description = "Charging profiles kept by the server and re-sent after a reboot or reconnect"),
        (name = "local lists", description = "Local authorization lists kept in step with idTags"),
        (name = "events", description = "Live Server-Sent Events"),
        (name = "operating", description = "Probes, metrics and this document"),
        (name = "ocpp", description = "The OCPP 1.6J WebSocket endpoint for chargers"),
        (name = "pages", description = "HTML pages for people: the operator console and the pay page"),
    ),
    modifiers(&BearerScheme),
)]
struct Root;

#[derive(OpenApi)]
#[openapi(paths(openapi_json, docs_page))]
struct ReferenceDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A token from /api/auth/login, /api/auth/register or `csms token`; \
                         HS256, with the user id as `sub` and `role` driver or admin.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds the error envelope as the `default` answer of every JSON operation
/// (any status not listed), so a client generator knows every failure's shape.
struct Envelope;

impl Modify for Envelope {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let (name, schema) = (
            <ErrorBody as utoipa::ToSchema>::name(),
            <ErrorBody as utoipa::PartialSchema>::schema(),
        );
        components.schemas.insert(name.to_string(), schema);
        let reference = RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"));
        for item in doc.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if operation.tags.as_ref().is_some_and(|t| {
                    t.iter().any(|t| t == "ocpp") || t.iter().any(|t| t == "pages")
                }) {
                    continue;
                }
                operation.responses.responses.entry("default".into()).or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("Any other status: the error envelope, with `code` a machine-readable reason")
                            .content(
                                "application/json",
                                ContentBuilder::new().schema(Some(reference.clone())).build(),
                            )
                            .build(),
                    )
                });
            }
        }
    }
}

/// `GET /api/openapi.json`, built once.
#[utoipa::path(get, path = "/api/openapi.json", operation_id = "getOpenApi", tag = "operating",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| serde_json::to_value(document()).unwrap_or(Value::Null));
    Json(doc.clone()).into_response()
}

async fn docs_redirect() -> Redirect {
    Redirect::permanent("/docs/")
}

/// `GET /docs/`: Swagger UI on this server's document, from vendored assets.
#[utoipa::path(get, path = "/docs/", operation_id = "getApiReference", tag = "operating",
    responses((status = 200, description = "The interactive API reference (HTML)", content_type = "text/html")))]
async fn docs_page() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>csms API reference</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  validatorUrl: null,
  tryItOutEnabled: true
});
</script>
</body>
</html>
"##;

const ASSET_CACHE: &str = "public, max-age=86400";

async fn docs_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        include_str!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    )
}

async fn docs_style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        include_str!("../../assets/swagger-ui/swagger-ui.css"),
    )
}

// ---------------------------------------------------------------------------
// The shapes. Field names and types are what the handlers write (camelCase);
// `tests/openapi.rs` validates real answers against them.

/// The failure envelope.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always false.
    pub success: bool,
    /// A human sentence.
    #[schema(example = "batteryLevel must be a number from 0 to 100")]
    pub error: String,
    /// A machine-readable reason, e.g. `VALIDATION_ERROR`, `NOT_FOUND`, `CHARGER_OFFLINE`.
    #[schema(example = "VALIDATION_ERROR")]
    pub code: String,
    /// More about the failure; for 400, `{field, reason}`.
    pub details: Value,
}

/// The success envelope: `{"success": true, "data": ...}`.
#[derive(Serialize, ToSchema)]
pub struct Data<T> {
    pub success: bool,
    pub data: T,
}

/// A page of a list, with the total in the database.
#[derive(Serialize, ToSchema)]
pub struct Paged<T> {
    pub success: bool,
    pub data: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Serialize, ToSchema)]
pub struct Pagination {
    /// Rows matching, over all pages.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// A connector: a number from 1, or `connector-N`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ConnectorRef {
    Number(i64),
    Name(String),
}

/// A charging session, from the app or from a charger.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "0b6f3c2e-3f0e-4a53-a2a4-7a1c0b4f5d21", "userId": "u-1",
    "stationId": "evliter-lagos-victoria-island", "stationName": "EVLiter Victoria Island Hub",
    "connectorId": "connector-1", "startTime": "2024-01-15T10:00:00.000Z", "endTime": null,
    "duration": 15, "energyDelivered": 4.2, "totalCost": 693, "currency": "NGN", "pricePerKWh": 165,
    "averagePower": 16.8, "batteryLevel": 52, "batteryLevelStart": 45, "status": "active",
    "stationRating": null, "source": "app", "chargerId": null, "transactionId": null, "endReason": null
}))]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub station_id: String,
    pub station_name: String,
    pub connector_id: String,
    #[schema(format = DateTime)]
    pub start_time: String,
    #[schema(format = DateTime)]
    pub end_time: Option<String>,
    /// Whole minutes.
    pub duration: i64,
    /// kWh.
    pub energy_delivered: f64,
    /// In `currency`, rounded to its minor unit; 0 when cancelled.
    pub total_cost: f64,
    pub currency: String,
    #[serde(rename = "pricePerKWh")]
    pub price_per_kwh: f64,
    /// kW over whole minutes; 0 in the first minute.
    pub average_power: f64,
    /// Percent.
    pub battery_level: Option<f64>,
    pub battery_level_start: Option<f64>,
    pub status: SessionStatus,
    /// 1 to 5.
    pub station_rating: Option<i64>,
    pub source: SessionSource,
    pub charger_id: Option<String>,
    pub transaction_id: Option<i64>,
    pub end_reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Completed,
    Cancelled,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionSource {
    App,
    Ocpp,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartSession {
    pub station_id: String,
    pub connector_id: ConnectorRef,
    /// Percent, 0 to 100.
    pub battery_level_start: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"batteryLevel": 52, "energyDelivered": 4.2}))]
pub struct UpdateActive {
    /// Percent, 0 to 100.
    pub battery_level: f64,
    /// kWh so far; ignored when a charger's meter is the source.
    pub energy_delivered: Option<f64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndSession {
    pub session_id: String,
    /// Percent; with no energy reported, energy is estimated from the rise.
    pub battery_level_end: Option<f64>,
    /// 1 to 5.
    pub station_rating: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionRef {
    pub session_id: String,
}

/// `GET /api/charging/sessions/active`: the session, or null.
#[derive(Serialize, ToSchema)]
pub struct ActiveSession {
    pub success: bool,
    pub session: Option<Session>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub total_sessions: i64,
    /// kWh.
    pub total_energy_used: f64,
    /// In `currency`, the driver's most used one.
    pub total_spent: f64,
    pub currency: Option<String>,
    /// Every currency spent in, to its total.
    pub spent_by_currency: std::collections::BTreeMap<String, f64>,
    /// Minutes.
    pub average_session_duration: f64,
    /// The station id used most.
    pub favorite_station: Option<String>,
    pub favorite_station_name: Option<String>,
    pub monthly_usage: Vec<MonthlyUsage>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonthlyUsage {
    #[schema(example = "2024-01")]
    pub month: String,
    pub sessions: i64,
    pub energy_used: f64,
    pub total_spent: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    pub success: bool,
    /// The five newest.
    pub sessions: Vec<Session>,
    pub stats: Stats,
    pub active_session: Option<Session>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Register {
    pub email: String,
    /// At least 8 characters.
    pub password: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct Login {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    pub name: String,
    pub role: Role,
    /// kWh; null is the 60 kWh default.
    pub battery_capacity: Option<f64>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Driver,
    Admin,
}

#[derive(Serialize, ToSchema)]
pub struct TokenAndUser {
    pub token: String,
    pub user: User,
}

/// The token's user; only `id` and `role` for a token minted for a user the
/// database does not hold (`csms token`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub id: String,
    pub role: Role,
    pub email: Option<String>,
    pub name: Option<String>,
    pub battery_capacity: Option<f64>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
}

// --- operators

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Station {
    pub id: String,
    pub name: Option<String>,
    #[serde(rename = "pricePerKWh")]
    pub price_per_kwh: Option<f64>,
    pub currency: Option<String>,
    pub is_ocpp_charger: bool,
    pub has_ocpp_password: bool,
    pub registration_status: Option<Registration>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    pub firmware_version: Option<String>,
    /// Connected to this server now.
    pub connected: bool,
    #[schema(format = DateTime)]
    pub connected_since: Option<String>,
    #[schema(format = DateTime)]
    pub last_heartbeat: Option<String>,
    #[schema(format = DateTime)]
    pub last_seen: Option<String>,
    pub connectors: Vec<Connector>,
}

#[derive(Serialize, ToSchema)]
pub enum Registration {
    Accepted,
    Pending,
    Rejected,
}

/// A connector's last StatusNotification.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connector {
    /// 0 is the charger itself.
    pub connector_id: i64,
    /// OCPP ChargePointStatus.
    pub status: String,
    pub error_code: String,
    pub info: Option<String>,
    pub vendor_id: Option<String>,
    pub vendor_error_code: Option<String>,
    #[schema(format = DateTime)]
    pub status_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutStation {
    /// At most 200 characters.
    pub name: String,
    /// Per kWh, at most 6 decimals.
    #[serde(rename = "pricePerKWh")]
    pub price_per_kwh: f64,
    /// ISO 4217.
    pub currency: String,
    /// The charger's Basic-auth password (8 to 64 characters), stored hashed.
    pub ocpp_password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PutRegistration {
    pub status: Registration,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutUser {
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    /// kWh, 0.1 to 1000.
    pub battery_capacity: Option<f64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdTag {
    pub id_tag: String,
    pub user_id: Option<String>,
    pub status: IdTagStatus,
    #[schema(format = DateTime)]
    pub expiry_date: Option<String>,
    pub parent_id_tag: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub enum IdTagStatus {
    Accepted,
    Blocked,
    Expired,
    Invalid,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutIdTag {
    pub user_id: String,
    /// Accepted when absent.
    pub status: Option<IdTagStatus>,
    #[schema(format = DateTime)]
    pub expiry_date: Option<String>,
    pub parent_id_tag: Option<String>,
}

/// An active session as operators see it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminSession {
    #[serde(flatten)]
    pub session: Session,
    /// An OCPP session whose charger is offline, silent for an hour or
    /// still waiting for its transaction; an app session untouched for 12 h.
    pub looks_stuck: bool,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

// --- payments

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaidStartRequest {
    /// The token's subject (an admin may act for anyone).
    pub user_id: String,
    pub charger_id: String,
    /// Mixed case claims an EIP-55 checksum.
    pub wallet_address: String,
    pub chain: String,
    /// The most the session may cost, in the station's currency.
    pub expected_max_cost: f64,
    /// `connector-1` when absent.
    pub connector_id: Option<ConnectorRef>,
    pub metadata: Option<std::collections::BTreeMap<String, Value>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaidStart {
    pub session_id: String,
    pub status: SessionStatus,
    pub balance_check_id: String,
    pub balance_status: BalanceStatus,
    pub user_id: String,
    pub charger_id: String,
    pub connector_id: String,
    pub session: Session,
    pub balance_check: BalanceCheck,
}

/// A start refused for the balance: the check is recorded.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceRefusal {
    pub success: bool,
    pub error: String,
    /// `INSUFFICIENT_BALANCE` or `BALANCE_CHECK_FAILED`.
    pub code: String,
    pub details: Value,
    pub data: BalanceRefusalData,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceRefusalData {
    pub balance_check_id: String,
    pub balance_status: BalanceStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum BalanceStatus {
    Sufficient,
    Insufficient,
    Error,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceCheck {
    pub id: String,
    pub user_id: String,
    pub wallet_address: String,
    pub chain: String,
    pub requested_amount: f64,
    pub actual_balance: Option<f64>,
    pub currency: String,
    pub status: BalanceStatus,
    /// `ledger` or `evm`.
    pub provider: String,
    pub error_message: Option<String>,
    pub metadata: Value,
    pub session_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaidStopRequest {
    pub user_id: String,
    pub session_id: String,
    /// Honoured from an admin token only.
    pub final_cost: Option<f64>,
}

/// A stop: with its payment link once the charger's StopTransaction is in
/// (200), or `status: stopping` and the session (202) before that.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaidStop {
    pub session_id: String,
    /// `completed`, `cancelled`, or `stopping` (202).
    pub status: String,
    pub total_cost: Option<f64>,
    pub currency: Option<String>,
    pub energy_delivered: Option<f64>,
    pub payment_link_id: Option<String>,
    pub payment_url: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    pub payment_status: Option<String>,
    pub session: Session,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentLink {
    pub id: String,
    pub session_id: String,
    pub user_id: String,
    /// `local` (this server's pay page) or `stripe`.
    pub provider: String,
    pub url: String,
    pub amount: f64,
    pub currency: String,
    /// `pending`, `paid` or `expired`.
    pub status: String,
    pub metadata: Value,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = DateTime)]
    pub paid_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionWithLinks {
    #[serde(flatten)]
    pub session: Session,
    pub wallet_address: Option<String>,
    pub chain: Option<String>,
    pub balance_check_id: Option<String>,
    pub payment_links: Vec<PaymentLink>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalletBalance {
    pub wallet_address: String,
    /// `available`, or `held` for running sessions.
    pub kind: String,
    pub currency: String,
    pub balance: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecreatedLink {
    pub payment_link_id: String,
    pub payment_url: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub link: PaymentLink,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credit {
    /// Positive, in `currency`.
    pub amount: f64,
    pub currency: String,
    /// The ledger wallet; `default` when absent.
    pub wallet_address: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credited {
    pub user_id: String,
    pub wallet_address: String,
    pub currency: String,
    /// The wallet's balance after the credit.
    pub balance: f64,
}

#[derive(Serialize, ToSchema)]
pub struct StripeAck {
    pub received: bool,
    /// The event was handled before (Stripe retries).
    pub duplicate: bool,
}

// --- operating

#[derive(Serialize, ToSchema)]
pub struct Probe {
    /// `ok` or `unavailable`.
    pub status: String,
    /// Why not, when unavailable.
    pub reason: Option<String>,
}
