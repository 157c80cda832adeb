//! The payment API (`/api/v1/...`): sessions started after a balance check
//! and stopped with a payment link, the audit trail, Stripe's webhook, the
//! server's own pay page, and operators' wallet credits.

use super::error::{ok, ApiError, ApiResult};
use super::extract::{AdminUser, AuthUser, Body};
use super::openapi::{self as doc, Data};
use crate::engine::money::{major_json, parse_amount_minor, parse_currency};
use crate::engine::view::session_json;
use crate::payments::service::{
    balance_check_json, link_json, max_amount_minor, PaidStart, PaymentError, StopResult,
    MAX_AMOUNT,
};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/session/start", post(start))
        .route("/api/v1/session/stop", post(stop))
        .route("/api/v1/user/balance-check/{id}", get(one_check))
        .route("/api/v1/user/{user_id}/balance-checks", get(checks))
        .route("/api/v1/user/{user_id}/sessions", get(sessions))
        .route("/api/v1/user/{user_id}/wallet", get(wallet))
        .route("/api/v1/payment-links/{id}", get(one_link))
        .route("/api/v1/payment-links/{id}/recreate", post(recreate))
        .route("/api/v1/payment-links/{id}/pay", post(pay_link))
        .route("/api/v1/webhooks/stripe", post(stripe_webhook))
        .route("/api/admin/users/{id}/wallet/credit", post(credit))
        .route("/pay/{id}", get(pay_page).post(pay))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    start,
    stop,
    one_check,
    checks,
    sessions,
    wallet,
    one_link,
    recreate,
    pay_link,
    stripe_webhook,
    credit,
    pay_page,
    pay
))]
pub(crate) struct Doc;

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        let message = e.to_string();
        match e {
            PaymentError::Insufficient(check) | PaymentError::CheckFailed(check) => {
                let code = if check.status == "INSUFFICIENT" {
                    "INSUFFICIENT_BALANCE"
                } else {
                    "BALANCE_CHECK_FAILED"
                };
                ApiError::new(StatusCode::PAYMENT_REQUIRED, code, message).with_details(json!({
                    "balanceCheckId": check.id,
                    "balanceStatus": check.status,
                    "balanceCheck": balance_check_json(&check),
                }))
            }
            PaymentError::InsufficientFunds(_) => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "INSUFFICIENT_FUNDS", message)
            }
            PaymentError::LinkNotFound => ApiError::not_found(message),
            PaymentError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "PAYMENT_CONFLICT", message)
            }
            PaymentError::Provider(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "PAYMENT_PROVIDER_ERROR", message)
            }
            PaymentError::Engine(e) => e.into(),
        }
    }
}

/// A 402 of a balance check carries `data: {balanceCheckId, balanceStatus}`
/// beside the error, as the contract names it.
fn payment_error(e: PaymentError) -> Response {
    let error: ApiError = e.into();
    if error.status == StatusCode::PAYMENT_REQUIRED && error.details.get("balanceCheckId").is_some()
    {
        let data = json!({ "balanceCheckId": error.details["balanceCheckId"], "balanceStatus": error.details["balanceStatus"] });
        let body = json!({ "success": false, "error": error.message, "code": error.code, "details": error.details, "data": data });
        return (StatusCode::PAYMENT_REQUIRED, Json(body)).into_response();
    }
    error.into_response()
}

/// An unknown charger is 404 and an OCPP charger that is not connected 409,
/// both before any balance is checked: a check (and a 402 when the unknown
/// id's default currency differs from the wallet's) for a start that cannot
/// happen would tell the driver something false. A known station that is not
/// an OCPP charger (the app reports its energy) may start. The engine checks
/// the connection again when it starts, for a charger that leaves meanwhile.
async fn charger_can_start(state: &AppState, charger_id: &str) -> ApiResult<()> {
    let charger = state.store.charger(charger_id).await?;
    if charger.is_none() && state.store.station(charger_id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "CHARGER_NOT_FOUND",
            format!("Charger {charger_id} not found"),
        ));
    }
    if charger.is_some() && state.registry.presence(charger_id).await?.is_none() {
        return Err(crate::engine::EngineError::ChargerOffline(charger_id.to_owned()).into());
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/session/start", operation_id = "startPaidSession", tag = "payments", security(("bearer" = [])),
    request_body(content = doc::PaidStartRequest, example = json!({"userId": "u-1", "chargerId": "CP001", "walletAddress": "ledger",
        "chain": "ledger", "expectedMaxCost": 5000, "connectorId": 1})),
    responses(
        (status = 201, description = "The balance sufficed and the charger was told to start", body = Data<doc::PaidStart>),
        (status = 400, description = "Invalid input (a wrong EIP-55 checksum, a cost out of bounds)", body = doc::ErrorBody),
        (status = 402, description = "`INSUFFICIENT_BALANCE` or `BALANCE_CHECK_FAILED`: the check is recorded, no session", body = doc::BalanceRefusal),
        (status = 403, description = "`userId` is not the token's user", body = doc::ErrorBody),
        (status = 404, description = "`CHARGER_NOT_FOUND`", body = doc::ErrorBody),
        (status = 409, description = "The charger is offline or refused (the session is cancelled), or the connector is busy", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn start(State(state): State<AppState>, user: AuthUser, Body(body): Body) -> Response {
    let result = async {
        let user_id = body.string("userId")?;
        user.may_act_for(&user_id)?;
        let request = PaidStart {
            user_id,
            charger_id: body.string("chargerId")?,
            wallet_address: body.string("walletAddress")?,
            chain: body.string("chain")?,
            expected_max_cost: body.raw("expectedMaxCost").cloned().ok_or_else(|| {
                ApiError::invalid("expectedMaxCost", "expectedMaxCost is required")
            })?,
            connector_id: body
                .connector("connectorId")?
                .unwrap_or_else(|| "connector-1".into()),
            metadata: body.raw("metadata").cloned().unwrap_or(json!({})),
        };
        if request.wallet_address.len() > 128 || request.chain.len() > 64 {
            return Err(ApiError::invalid(
                "walletAddress",
                "walletAddress or chain is too long",
            ));
        }
        check_wallet_checksum(&request.wallet_address)?;
        if !request.metadata.is_object() {
            return Err(ApiError::invalid("metadata", "metadata must be an object"));
        }
        charger_can_start(&state, &request.charger_id).await?;
        Ok(request)
    }
    .await;
    let request = match result {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match state.payments.start(request).await {
        Ok((session, check)) => (
            StatusCode::CREATED,
            ok(json!({
                "sessionId": session.id,
                "status": session.status,
                "balanceCheckId": check.id,
                "balanceStatus": check.status,
                "userId": session.user_id,
                "chargerId": session.station_id,
                "connectorId": session.connector_id,
                "session": session_json(&session, Utc::now()),
                "balanceCheck": balance_check_json(&check),
            })),
        )
            .into_response(),
        Err(e) => payment_error(e),
    }
}

#[utoipa::path(post, path = "/api/v1/session/stop", operation_id = "stopPaidSession", tag = "payments", security(("bearer" = [])),
    request_body = doc::PaidStopRequest,
    responses(
        (status = 200, description = "Stopped, with a payment link for the engine's final cost", body = Data<doc::PaidStop>),
        (status = 202, description = "`status: stopping`: the charger's StopTransaction has not arrived yet; the link is made when it does", body = Data<doc::PaidStop>),
        (status = 400, description = "Invalid input, unknown or not active session", body = doc::ErrorBody),
        (status = 403, description = "Not the owner", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn stop(State(state): State<AppState>, user: AuthUser, Body(body): Body) -> Response {
    let parsed = async {
        let user_id = body.string("userId")?;
        user.may_act_for(&user_id)?;
        let session_id = body.string("sessionId")?;
        // finalCost is honoured from an admin only; a driver's is ignored.
        let final_cost = match (body.raw("finalCost"), user.is_admin()) {
            (Some(value), true) => {
                let session =
                    state.store.session(&session_id).await?.ok_or_else(|| {
                        ApiError::from(crate::engine::EngineError::SessionNotFound)
                    })?;
                let currency = &session.currency;
                Some(
                    parse_amount_minor(value, currency)
                        .filter(|m| (0..=max_amount_minor(currency)).contains(m))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "finalCost",
                                format!("finalCost must be an amount of {currency} from 0 to {MAX_AMOUNT}"),
                            )
                        })?,
                )
            }
            _ => None,
        };
        if let Some(session) = state.store.session(&session_id).await? {
            if session.user_id != user_id {
                return Err(ApiError::forbidden("This session belongs to another user"));
            }
        }
        Ok::<_, ApiError>((session_id, final_cost))
    }
    .await;
    let (session_id, final_cost) = match parsed {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match state.payments.stop(&user.caller(), &session_id, final_cost).await {
        Ok(StopResult { session, stopping: true, .. }) => {
            (StatusCode::ACCEPTED, ok(json!({ "sessionId": session.id, "status": "stopping", "session": session_json(&session, Utc::now()) }))).into_response()
        }
        Ok(StopResult { session, link, .. }) => {
            let cost = if session.status == "cancelled" { 0 } else { link.as_ref().map(|l| l.amount_minor).unwrap_or(session.cost_minor) };
            ok(json!({
                "sessionId": session.id,
                "status": session.status,
                "totalCost": major_json(cost, &session.currency),
                "currency": session.currency,
                "energyDelivered": crate::engine::view::num(crate::engine::calc::round_to(session.energy_wh / 1000.0, 3)),
                "paymentLinkId": link.as_ref().map(|l| l.id.clone()),
                "paymentUrl": link.as_ref().map(|l| l.url.clone()),
                "expiresAt": link.as_ref().map(|l| crate::ocpp::time::format_ms(l.expires_at)),
                "paymentStatus": link.as_ref().map(|l| l.status.clone()),
                "session": session_json(&session, Utc::now()),
            }))
            .into_response()
        }
        Err(e) => payment_error(e),
    }
}

#[utoipa::path(get, path = "/api/v1/user/{user_id}/balance-checks", operation_id = "listUserBalanceChecks", tag = "payments", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The token's user (an admin may ask for anyone)")),
    responses(
        (status = 200, description = "The user's balance checks, newest first", body = Data<Vec<doc::BalanceCheck>>),
        (status = 403, description = "Another user's", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn checks(
    State(state): State<AppState>,
    user: AuthUser,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    user.may_act_for(&user_id)?;
    let list = state.store.balance_checks_of_user(&user_id).await?;
    Ok(ok(Value::Array(
        list.iter().map(balance_check_json).collect(),
    )))
}

#[utoipa::path(get, path = "/api/v1/user/balance-check/{id}", operation_id = "getBalanceCheck", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "Balance check id")),
    responses(
        (status = 200, description = "One balance check", body = Data<doc::BalanceCheck>),
        (status = 403, description = "Another user's", body = doc::ErrorBody),
        (status = 404, description = "No such check", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn one_check(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let check = state
        .store
        .balance_check(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("Balance check not found"))?;
    user.may_act_for(&check.user_id)?;
    Ok(ok(balance_check_json(&check)))
}

/// A driver's sessions, each with its payment links.
#[utoipa::path(get, path = "/api/v1/user/{user_id}/sessions", operation_id = "listPaidSessions", tag = "payments", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The token's user (an admin may ask for anyone)")),
    responses(
        (status = 200, description = "The user's sessions, each with its payment links", body = Data<Vec<doc::SessionWithLinks>>),
        (status = 403, description = "Another user's", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn sessions(
    State(state): State<AppState>,
    user: AuthUser,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    user.may_act_for(&user_id)?;
    let now = Utc::now();
    let mut out = Vec::new();
    for s in state.store.user_sessions(&user_id).await? {
        let mut v = session_json(&s, now);
        let links = state.store.payment_links_of_session(&s.id).await?;
        v["walletAddress"] = json!(s.payment.wallet_address);
        v["chain"] = json!(s.payment.chain);
        v["balanceCheckId"] = json!(s.payment.balance_check_id);
        v["paymentLinks"] = Value::Array(links.iter().map(link_json).collect());
        out.push(v);
    }
    Ok(ok(Value::Array(out)))
}

#[utoipa::path(get, path = "/api/v1/user/{user_id}/wallet", operation_id = "getWallet", tag = "payments", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The token's user (an admin may ask for anyone)")),
    responses(
        (status = 200, description = "The user's prepaid wallets: available and held balances per currency", body = Data<Vec<doc::WalletBalance>>),
        (status = 403, description = "Another user's", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn wallet(
    State(state): State<AppState>,
    user: AuthUser,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    user.may_act_for(&user_id)?;
    Ok(ok(Value::Array(wallet_balances(&state, &user_id).await?)))
}

/// A user's prepaid wallets as the API shows them: each wallet's available
/// balance, then what is held for running sessions, per currency.
pub(crate) async fn wallet_balances(state: &AppState, user_id: &str) -> anyhow::Result<Vec<Value>> {
    let mut wallets = Vec::new();
    for kind in ["wallet", "hold"] {
        let prefix = format!("{kind}:{user_id}:");
        for (account, currency, balance) in state.store.ledger_accounts(&prefix).await? {
            wallets.push(json!({
                "walletAddress": account.strip_prefix(&prefix).unwrap_or(&account),
                "kind": if kind == "wallet" { "available" } else { "held" },
                "currency": currency,
                "balance": major_json(balance, &currency),
            }));
        }
    }
    Ok(wallets)
}

#[utoipa::path(get, path = "/api/v1/payment-links/{id}", operation_id = "getPaymentLink", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "Payment link id")),
    responses(
        (status = 200, description = "One payment link", body = Data<doc::PaymentLink>),
        (status = 403, description = "Another user's", body = doc::ErrorBody),
        (status = 404, description = "No such link", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn one_link(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let link = state
        .store
        .payment_link(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("Payment link not found"))?;
    user.may_act_for(&link.user_id)?;
    Ok(ok(link_json(&link)))
}

#[utoipa::path(post, path = "/api/v1/payment-links/{id}/recreate", operation_id = "recreatePaymentLink", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "Payment link id")),
    responses(
        (status = 201, description = "The old link expired and a new one made (a session never has two unexpired unpaid links)", body = Data<doc::RecreatedLink>),
        (status = 403, description = "Another user's", body = doc::ErrorBody),
        (status = 404, description = "No such link", body = doc::ErrorBody),
        (status = 409, description = "`PAYMENT_CONFLICT`: already paid", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn recreate(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Response {
    match state.payments.recreate(&user.caller(), &id).await {
        Ok(link) => (
            StatusCode::CREATED,
            ok(json!({
                "paymentLinkId": link.id,
                "paymentUrl": link.url,
                "expiresAt": crate::ocpp::time::format_ms(link.expires_at),
                "link": link_json(&link),
            })),
        )
            .into_response(),
        Err(e) => payment_error(e),
    }
}

/// Pays a local link from the owner's prepaid wallet, as the pay page's
/// button does: the link, paid; 402 `INSUFFICIENT_FUNDS` when the wallet
/// cannot cover it (nothing taken, the link stays payable); 409 when the link
/// is not payable (paid, expired, a Stripe link).
#[utoipa::path(post, path = "/api/v1/payment-links/{id}/pay", operation_id = "payPaymentLink", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "Payment link id")),
    responses(
        (status = 200, description = "Paid from the owner's prepaid wallet", body = Data<doc::PaymentLink>),
        (status = 402, description = "`INSUFFICIENT_FUNDS`: nothing taken, the link stays payable", body = doc::ErrorBody),
        (status = 403, description = "Another user's", body = doc::ErrorBody),
        (status = 404, description = "No such link", body = doc::ErrorBody),
        (status = 409, description = "Not payable: paid, expired, or a Stripe link", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
    ))]
async fn pay_link(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Response {
    let owner = match state.store.payment_link(&id).await {
        Ok(Some(link)) => link.user_id,
        Ok(None) => return ApiError::not_found("Payment link not found").into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    if let Err(e) = user.may_act_for(&owner) {
        return e.into_response();
    }
    match state.payments.pay_from_wallet(&id).await {
        Ok(link) => ok(link_json(&link)).into_response(),
        Err(e) => payment_error(e),
    }
}

/// Stripe's webhook: the raw body is what the signature covers.
#[utoipa::path(post, path = "/api/v1/webhooks/stripe", operation_id = "stripeWebhook", tag = "payments",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature over the raw body")),
    request_body(content = Object, description = "A Stripe event (checkout.session.completed / expired)"),
    responses(
        (status = 200, description = "Handled (or handled before)", body = doc::StripeAck),
        (status = 400, description = "`MISSING_SIGNATURE` or `INVALID_WEBHOOK`", body = doc::ErrorBody),
    ))]
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(signature) = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "MISSING_SIGNATURE",
            "Stripe-Signature header is missing",
        )
        .into_response();
    };
    match state.payments.stripe_webhook(&body, signature).await {
        Ok(fresh) => Json(json!({ "received": true, "duplicate": !fresh })).into_response(),
        Err(PaymentError::Provider(why)) => {
            ApiError::new(StatusCode::BAD_REQUEST, "INVALID_WEBHOOK", why).into_response()
        }
        Err(e) => payment_error(e),
    }
}

#[utoipa::path(post, path = "/api/admin/users/{id}/wallet/credit", operation_id = "creditWallet", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    request_body(content = doc::Credit, example = json!({"amount": 10000, "currency": "NGN"})),
    responses(
        (status = 200, description = "Credited; the wallet's new balance", body = Data<doc::Credited>),
        (status = 400, description = "Invalid amount, currency or wallet", body = doc::ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin", body = doc::ErrorBody),
    ))]
async fn credit(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(user_id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let currency = parse_currency(&body.string("currency")?)
        .map_err(|e| ApiError::invalid("currency", e.to_string()))?;
    let amount_value = body
        .raw("amount")
        .ok_or_else(|| ApiError::invalid("amount", "amount is required"))?;
    let amount = parse_amount_minor(amount_value, &currency)
        .filter(|m| *m > 0 && *m <= max_amount_minor(&currency))
        .ok_or_else(|| {
            ApiError::invalid(
                "amount",
                format!("amount must be a positive amount of {currency} up to {MAX_AMOUNT}"),
            )
        })?;
    let wallet = body
        .opt_string("walletAddress")?
        .unwrap_or_else(|| crate::payments::ledger::DEFAULT_WALLET.into());
    if wallet.len() > 128 {
        return Err(ApiError::invalid(
            "walletAddress",
            "walletAddress is too long",
        ));
    }
    check_wallet_checksum(&wallet)?;
    state.store.ensure_user(&user_id).await?;
    let balance = state
        .payments
        .credit(&user_id, &wallet, &currency, amount)
        .await?;
    Ok(ok(
        json!({ "userId": user_id, "walletAddress": wallet.to_lowercase(), "currency": currency, "balance": major_json(balance, &currency) }),
    ))
}

/// A wallet written as an EVM address in mixed case claims an EIP-55
/// checksum; a wrong one is a typo, refused before anything is read or
/// credited. Anything else is left to the wallet's provider (a ledger
/// wallet may be any name; the EVM provider reports what it cannot read).
fn check_wallet_checksum(wallet: &str) -> ApiResult<()> {
    match crate::payments::evm::EvmAddress::parse(wallet) {
        Err(e @ crate::payments::evm::AddressError::BadChecksum) => Err(ApiError::invalid(
            "walletAddress",
            format!("walletAddress {wallet:?}: {e}"),
        )),
        _ => Ok(()),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The server's own pay page: the session and the amount, and a button that
/// settles it from the driver's prepaid wallet. The link id, unguessable and
/// short-lived, is the capability, as with any payment link.
#[utoipa::path(get, path = "/pay/{id}", operation_id = "payPage", tag = "pages",
    params(("id" = String, Path, description = "Payment link id: the unguessable id is the capability")),
    responses(
        (status = 200, description = "The pay page: the session, the amount and a button to pay from the prepaid wallet", content_type = "text/html", body = String),
        (status = 404, description = "No such link (an HTML page)", content_type = "text/html", body = String),
    ))]
async fn pay_page(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    render(&state, &id, None).await
}

/// The page's button. A payment not made answers the page with its notice
/// and the API's status for the reason (402 the wallet cannot cover it, 409
/// the link is not payable).
#[utoipa::path(post, path = "/pay/{id}", operation_id = "payFromPage", tag = "pages",
    params(("id" = String, Path, description = "Payment link id")),
    responses(
        (status = 200, description = "Paid: the page with a notice", content_type = "text/html", body = String),
        (status = 402, description = "The wallet cannot cover it: the page with the reason", content_type = "text/html", body = String),
        (status = 404, description = "No such link (an HTML page)", content_type = "text/html", body = String),
        (status = 409, description = "Not payable: the page with the reason", content_type = "text/html", body = String),
    ))]
async fn pay(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let (status, notice) = match state.payments.pay_from_wallet(&id).await {
        Ok(_) => (StatusCode::OK, "Payment received. Thank you!".to_owned()),
        Err(e) => {
            let error = ApiError::from(e);
            (error.status, format!("Payment not made: {}", error.message))
        }
    };
    let mut page = render(&state, &id, Some(notice)).await;
    if page.status() == StatusCode::OK {
        *page.status_mut() = status;
    }
    page
}

async fn render(state: &AppState, id: &str, notice: Option<String>) -> Response {
    let link = match state.store.payment_link(id).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                Html(page(
                    "Payment link not found",
                    "<p>This payment link does not exist.</p>",
                )),
            )
                .into_response()
        }
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let session = state.store.session(&link.session_id).await.ok().flatten();
    let amount = format!(
        "{} {}",
        major_json(link.amount_minor, &link.currency),
        link.currency
    );
    let expired = link.status == "pending" && link.expires_at <= Utc::now();
    let status = if expired {
        "expired".to_owned()
    } else {
        link.status.clone()
    };
    let mut rows = format!(
        "<tr><th>Amount</th><td id=\"amount\">{}</td></tr>",
        escape(&amount)
    );
    if let Some(s) = &session {
        rows.push_str(&format!(
            "<tr><th>Station</th><td>{}</td></tr><tr><th>Energy</th><td>{} kWh</td></tr><tr><th>Started</th><td>{}</td></tr><tr><th>Ended</th><td>{}</td></tr>",
            escape(&s.station_name),
            crate::engine::calc::round_to(s.energy_wh / 1000.0, 3),
            crate::ocpp::time::format_ms(s.start_time),
            s.end_time.map(crate::ocpp::time::format_ms).unwrap_or_default(),
        ));
    }
    rows.push_str(&format!(
        "<tr><th>Status</th><td id=\"status\">{}</td></tr><tr><th>Pay before</th><td>{}</td></tr>",
        escape(&status),
        crate::ocpp::time::format_ms(link.expires_at)
    ));
    let action = if status == "pending" && link.provider == "local" {
        format!("<form method=\"post\" action=\"/pay/{}\"><button id=\"pay\" type=\"submit\">Pay {} from my wallet</button></form>", escape(&link.id), escape(&amount))
    } else if status == "pending" {
        format!(
            "<p><a id=\"pay\" href=\"{}\">Pay {}</a></p>",
            escape(&link.url),
            escape(&amount)
        )
    } else {
        String::new()
    };
    let notice = notice
        .map(|n| format!("<p id=\"notice\">{}</p>", escape(&n)))
        .unwrap_or_default();
    let body = format!("{notice}<table>{rows}</table>{action}");
    Html(page("Pay for your charging session", &body)).into_response()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}\
         th{{text-align:left;padding-right:1rem}}button{{font-size:1.1rem;padding:.6rem 1.2rem}}#notice{{font-weight:bold}}form,a#pay{{display:inline-block;margin-top:1rem}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    )
}
