//! What the operator console reads beyond the operator API of `admin.rs`
//! (admin role): every session with filters, one transaction with its chart,
//! anomalies and frames, a user with tags and wallets, a wallet's ledger,
//! payment links and balance checks. Lists page in the database like the
//! other admin lists (`limit` 1–1000, default 100, `offset`, `pagination`).

use super::error::{ok, paged, ApiError, ApiResult};
use super::extract::{AdminUser, Query};
use super::openapi::{self as doc, Data, Paged};
use crate::engine::meter::{series, MeterPoint};
use crate::engine::money::major_json;
use crate::engine::view::session_json;
use crate::ocpp::time::format_ms;
use crate::payments::service::{balance_check_json, link_json};
use crate::state::AppState;
use crate::store::{
    like_pattern, Anomaly, LoggedMessage, Page, Sample, SessionQuery, TransactionRecord,
};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/sessions/history", get(session_history))
        .route("/api/admin/transactions/{id}", get(transaction))
        .route(
            "/api/admin/transactions/{id}/messages",
            get(transaction_messages),
        )
        .route("/api/admin/users/{id}", get(user))
        .route("/api/admin/users/{id}/ledger", get(ledger))
        .route("/api/admin/payment-links", get(payment_links))
        .route("/api/admin/balance-checks", get(balance_checks))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    session_history,
    transaction,
    transaction_messages,
    user,
    ledger,
    payment_links,
    balance_checks
))]
pub(crate) struct Doc;

/// A page of the list, as every admin list pages.
fn page(query: &Query) -> ApiResult<Page> {
    query.page(100, 1000)
}

/// A query parameter, empty meaning absent.
fn param<'q>(query: &'q Query, name: &str) -> Option<&'q str> {
    query.get(name).map(str::trim).filter(|v| !v.is_empty())
}

/// A status filter: one of `allowed`, else a 400 naming the field.
fn status_param(query: &Query, allowed: &[&str]) -> ApiResult<Option<String>> {
    match param(query, "status") {
        None => Ok(None),
        Some(s) if allowed.contains(&s) => Ok(Some(s.to_owned())),
        Some(_) => Err(ApiError::invalid(
            "status",
            format!("status must be one of {}", allowed.join(", ")),
        )),
    }
}

fn time_param(query: &Query, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    param(query, name)
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::invalid(name, format!("{name} must be an RFC 3339 time")))
        })
        .transpose()
}

#[utoipa::path(get, path = "/api/admin/sessions/history", operation_id = "listSessionHistory", tag = "admin", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "active, completed or cancelled"),
        ("chargerId" = Option<String>, Query, description = "Only this charger's"), ("userId" = Option<String>, Query, description = "Only this driver's"),
        ("q" = Option<String>, Query, description = "Case-insensitive, anywhere in the station's id or name, the driver's id, the idTag"),
        ("from" = Option<String>, Query, description = "Started at or after (RFC 3339)"), ("to" = Option<String>, Query, description = "Started before (RFC 3339)"),
        ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"), ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "Every session, newest first", body = Paged<doc::Session>),
        (status = 400, description = "An unknown status or a malformed time", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET /api/admin/sessions/history?status=&chargerId=&userId=&q=&from=&to=`:
/// every session, newest first. `q` matches the station's id or name, the
/// driver's id and the idTag (case-insensitive, anywhere in them); `from`
/// and `to` bound the start (RFC 3339, `to` excluded).
async fn session_history(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = page(&query)?;
    let filter = SessionQuery {
        status: status_param(&query, &["active", "completed", "cancelled"])?,
        charger_id: param(&query, "chargerId").map(str::to_owned),
        user_id: param(&query, "userId").map(str::to_owned),
        search: param(&query, "q").and_then(like_pattern),
        from: time_param(&query, "from")?,
        to: time_param(&query, "to")?,
    };
    let sessions = state.store.sessions_page(&filter, page).await?;
    let now = Utc::now();
    let items: Vec<Value> = sessions
        .items
        .iter()
        .map(|s| session_json(s, now))
        .collect();
    Ok(paged(&items, sessions.total, page))
}

fn transaction_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::invalid("id", "a transaction id is a whole number"))
}

/// One transaction as the console shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    pub transaction: TransactionRecord,
    /// Its session as the REST API shows it, if it has one.
    #[schema(value_type = Option<doc::Session>)]
    pub session: Option<Value>,
    /// Energy delivered (Wh), power (W) and battery level over time.
    pub series: Vec<MeterPoint>,
    pub anomalies: Vec<Anomaly>,
}

#[utoipa::path(get, path = "/api/admin/transactions/{id}", operation_id = "getTransaction", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The OCPP transactionId")),
    responses(
        (status = 200, description = "The transaction, its session, its meter values as chart points and its anomalies", body = Data<TransactionView>),
        (status = 400, description = "Not a whole number", body = doc::ErrorBody),
        (status = 404, description = "No such transaction", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET /api/admin/transactions/{id}`: the transaction, its session, its
/// meter values as chart points and its anomalies (the latest 1,000).
async fn transaction(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = transaction_id(&id)?;
    let tx = state
        .store
        .transaction(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Transaction {id} not found")))?;
    let samples: Vec<Sample> = state
        .store
        .meter_values(id)
        .await?
        .into_iter()
        .map(|s| Sample {
            sampled_at: s.sampled_at,
            measurand: s.measurand,
            phase: s.phase,
            unit: s.unit,
            context: s.context,
            location: s.location,
            format: s.format,
            value: s.value,
        })
        .collect();
    let session = state
        .store
        .session_of_transaction(id)
        .await?
        .map(|s| session_json(&s, Utc::now()));
    let anomalies = state
        .store
        .anomalies_page(
            None,
            Some(id),
            Page {
                limit: 1000,
                offset: 0,
            },
        )
        .await?
        .items;
    let view = TransactionView {
        series: series(tx.meter_start, &samples),
        transaction: tx,
        session,
        anomalies,
    };
    Ok(ok(serde_json::to_value(view).map_err(anyhow::Error::from)?))
}

#[utoipa::path(get, path = "/api/admin/transactions/{id}/messages", operation_id = "listTransactionMessages", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The OCPP transactionId"), ("limit" = Option<i64>, Query, description = "1 to 1000, default 500")),
    responses(
        (status = 200, description = "The frames its charger exchanged while it ran, oldest first", body = Data<Vec<crate::store::LoggedMessage>>),
        (status = 400, description = "Not a whole number", body = doc::ErrorBody),
        (status = 404, description = "No such transaction", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET /api/admin/transactions/{id}/messages?limit=`: the frames its charger
/// exchanged while it ran, oldest first: from a few seconds before the
/// server received its StartTransaction to a few seconds after its last
/// change (now, while it runs). `limit` 1–1000, default 500.
async fn transaction_messages(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    query: Query,
) -> ApiResult<Json<Value>> {
    let id = transaction_id(&id)?;
    let limit = query.integer("limit", 500, 1, 1000)?;
    let tx = state
        .store
        .transaction(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Transaction {id} not found")))?;
    let margin = chrono::Duration::seconds(5);
    let to = if tx.status == crate::store::TX_ACTIVE {
        Utc::now()
    } else {
        tx.updated_at
    } + margin;
    // The log rides behind the answers: commit what is queued first.
    state.store.flush().await?;
    let frames: Vec<LoggedMessage> = state
        .store
        .messages_between(&tx.charger_id, tx.received_at - margin, to, limit)
        .await?;
    Ok(ok(
        serde_json::to_value(frames).map_err(anyhow::Error::from)?
    ))
}

/// A user with their idTags and wallets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    #[schema(value_type = doc::User)]
    pub user: Value,
    #[schema(value_type = Vec<doc::IdTag>)]
    pub id_tags: Vec<Value>,
    #[schema(value_type = Vec<doc::WalletBalance>)]
    pub wallets: Vec<Value>,
}

#[utoipa::path(get, path = "/api/admin/users/{id}", operation_id = "getUser", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user, their idTags and their wallets", body = Data<UserView>),
        (status = 404, description = "No such user", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET /api/admin/users/{id}`: the user, their idTags and their wallets.
async fn user(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = state
        .store
        .user(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("User {id} not found")))?;
    let id_tags = state
        .store
        .id_tags_of_user(&id)
        .await?
        .iter()
        .map(super::admin::id_tag_json)
        .collect();
    let wallets = super::payments::wallet_balances(&state, &id).await?;
    let view = UserView {
        user: super::auth::routes::user_json(&user),
        id_tags,
        wallets,
    };
    Ok(ok(serde_json::to_value(view).map_err(anyhow::Error::from)?))
}

/// One ledger entry of a user's wallet or hold.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerLine {
    pub entry_id: i64,
    pub movement_id: String,
    /// `credit`, `hold`, `release` or `settle`.
    pub kind: String,
    /// What it was for: a session id, an operator's credit.
    pub reference: String,
    pub memo: Option<String>,
    pub wallet_address: String,
    /// `available` (the wallet) or `held`.
    #[schema(value_type = String)]
    pub account: &'static str,
    pub currency: String,
    /// Signed: money in is positive.
    #[schema(value_type = f64)]
    pub amount: Value,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[utoipa::path(get, path = "/api/admin/users/{id}/ledger", operation_id = "listLedger", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id"), ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"), ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "The movements of the user's wallets and holds, newest first", body = Paged<LedgerLine>),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET /api/admin/users/{id}/ledger`: the movements of the user's wallets
/// and holds, newest first.
async fn ledger(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = page(&query)?;
    let movements = state.store.ledger_movements(&id, page).await?;
    let lines: Vec<LedgerLine> = movements
        .items
        .into_iter()
        .map(|m| {
            let mut parts = m.account.splitn(3, ':');
            let account = match parts.next() {
                Some("hold") => "held",
                _ => "available",
            };
            let wallet = parts.nth(1).unwrap_or_default().to_owned();
            LedgerLine {
                entry_id: m.entry_id,
                movement_id: m.movement_id,
                kind: m.kind,
                reference: m.reference,
                memo: m.memo,
                wallet_address: wallet,
                account,
                amount: major_json(m.amount_minor, &m.currency),
                currency: m.currency,
                created_at: format_ms(m.created_at),
            }
        })
        .collect();
    Ok(paged(&lines, movements.total, page))
}

#[utoipa::path(get, path = "/api/admin/payment-links", operation_id = "listPaymentLinks", tag = "admin", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "pending, paid, expired or failed"), ("userId" = Option<String>, Query, description = "Only this user's"), ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"), ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "Payment links, newest first", body = Paged<doc::PaymentLink>),
        (status = 400, description = "An unknown status", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET /api/admin/payment-links?status=&userId=`: newest first.
async fn payment_links(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = page(&query)?;
    let status = status_param(&query, &["pending", "paid", "expired", "failed"])?;
    let links = state
        .store
        .payment_links_page(status.as_deref(), param(&query, "userId"), page)
        .await?;
    let items: Vec<Value> = links.items.iter().map(link_json).collect();
    Ok(paged(&items, links.total, page))
}

#[utoipa::path(get, path = "/api/admin/balance-checks", operation_id = "listBalanceChecks", tag = "admin", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "SUFFICIENT, INSUFFICIENT or ERROR"), ("userId" = Option<String>, Query, description = "Only this user's"), ("limit" = Option<i64>, Query, description = "Default 100, at most 1000"), ("offset" = Option<i64>, Query, description = "Default 0"),),
    responses(
        (status = 200, description = "Balance checks, newest first", body = Paged<doc::BalanceCheck>),
        (status = 400, description = "An unknown status", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
/// `GET /api/admin/balance-checks?status=&userId=`: newest first.
async fn balance_checks(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Query,
) -> ApiResult<Json<Value>> {
    let page = page(&query)?;
    let status = status_param(&query, &["SUFFICIENT", "INSUFFICIENT", "ERROR"])?;
    let checks = state
        .store
        .balance_checks_page(status.as_deref(), param(&query, "userId"), page)
        .await?;
    let items: Vec<Value> = checks.items.iter().map(balance_check_json).collect();
    Ok(paged(&items, checks.total, page))
}
