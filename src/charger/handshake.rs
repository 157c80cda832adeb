//! The WebSocket handshake at `/ocpp/{chargePointId}`: identity, security
//! profile 1/2 (HTTP Basic auth), the unknown-charger policy, subprotocol
//! negotiation and the per-connection buffer limits. Everything here is
//! decided before the upgrade, so a refused charger never gets to send a
//! single OCPP message.

use super::auth::{address_key, basic_credentials, verify_password, FailureLimiter};
use super::connection;
use super::registry::ConnectionInfo;
use crate::config::UnknownChargers;
use crate::ocpp::time::now_ms;
use crate::state::AppState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

pub const SUBPROTOCOL: &str = "ocpp1.6";
pub const MAX_IDENTITY_LEN: usize = 48;

/// The charger identity: the last path segment after `/ocpp/`, decoded.
pub fn identity_from_path(path: &str) -> Result<String, &'static str> {
    let rest = path.strip_prefix("/ocpp/").ok_or("not an OCPP path")?;
    let segment = rest.rsplit('/').next().unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| "identity is not UTF-8")?;
    validate_identity(&decoded)?;
    Ok(decoded.into_owned())
}

/// A charger identity as stored: 1 to 48 characters, no control characters
/// and no `/` (it must be reachable as one path segment).
pub fn validate_identity(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("empty charger identity");
    }
    if id.chars().count() > MAX_IDENTITY_LEN {
        return Err("charger identity longer than 48 characters");
    }
    if id.chars().any(|c| c.is_control() || c == '/') {
        return Err("charger identity contains control characters or '/'");
    }
    Ok(())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, why.to_owned()).into_response()
}

/// A failed handshake: counted against `keys`, and answered `refusal` (401,
/// 404) while they are within the limit, or 429 with `Retry-After` after the
/// tarpit once any is over it. Nothing else is ever refused by the limiter: a
/// handshake only gets here after its password was checked and found wrong.
async fn refuse_failed(
    limiter: &FailureLimiter,
    keys: &[&str],
    refusal: impl FnOnce() -> Response,
) -> Response {
    let Some(retry_after) = limiter.record_failure(keys) else {
        return refusal();
    };
    tracing::debug!(?keys, "failed handshake over the limit: 429");
    limiter.tarpit().await;
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, seconds.to_string())],
        "too many failed handshakes; try again later",
    )
        .into_response()
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(upgrade, upgrade_without_identity))]
pub(crate) struct Doc;

/// The OCPP endpoint: a charger's WebSocket handshake, accepted (101) or
/// refused; refusals are counted by reason for `/metrics`.
#[utoipa::path(get, path = "/ocpp/{chargerId}", operation_id = "connectCharger", tag = "ocpp",
    description = "A charger's OCPP 1.6J WebSocket (subprotocol `ocpp1.6`). Security profile 1/2: \
        HTTP Basic auth with the charger's identity and password when it has one. See the OCPP section of the README.",
    params(("chargerId" = String, Path, description = "The charge point identity: the last path segment, percent-decoded, 1 to 48 characters")),
    responses(
        (status = 101, description = "Upgraded: the charger speaks OCPP-J"),
        (status = 400, description = "Bad identity, or only other subprotocols offered"),
        (status = 401, description = "Wrong or missing Basic auth for a charger with a password"),
        (status = 404, description = "An unknown charger when unknown chargers are refused"),
        (status = 426, description = "Not a WebSocket upgrade"),
        (status = 429, description = "Too many failed handshakes for this identity or address; see `Retry-After`"),
        (status = 503, description = "Shutting down, or at the connection limit"),
    ))]
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let metrics = state.metrics.clone();
    let response = handshake(state, remote, uri, headers, ws).await;
    let reason = match response.status() {
        StatusCode::SWITCHING_PROTOCOLS => None,
        StatusCode::BAD_REQUEST => Some("bad_request"),
        StatusCode::UPGRADE_REQUIRED => Some("not_websocket"),
        StatusCode::NOT_FOUND => Some("unknown_charger"),
        StatusCode::UNAUTHORIZED => Some("bad_credentials"),
        StatusCode::TOO_MANY_REQUESTS => Some("too_many_failures"),
        StatusCode::SERVICE_UNAVAILABLE => Some("unavailable"),
        _ => Some("other"),
    };
    if let Some(reason) = reason {
        metrics.handshake_refused(reason);
    }
    response
}

/// `/ocpp/` with no identity: refused with 400 like any bad identity.
#[utoipa::path(get, path = "/ocpp/", operation_id = "connectChargerWithoutIdentity", tag = "ocpp",
    responses((status = 400, description = "No charge point identity in the path")))]
pub async fn upgrade_without_identity(
    state: State<AppState>,
    remote: ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    upgrade(state, remote, uri, headers, ws).await
}

async fn handshake(
    state: AppState,
    remote: SocketAddr,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let charger_id = match identity_from_path(uri.path()) {
        Ok(id) => id,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let Ok(ws) = ws else {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            "OCPP-J needs a WebSocket upgrade",
        );
    };
    // Chargers closed at shutdown reconnect at once; taking them back would
    // keep the shutdown waiting for connections that keep coming.
    if *state.shutdown.borrow() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "central system shutting down",
        );
    }
    // Failed handshakes count against the identity and the address, but the
    // limiter is consulted only once a handshake has failed: the right
    // password is never refused because someone else failed.
    let id_key = format!("id:{charger_id}");
    let ip_key = address_key(remote.ip());
    let limiter = &state.handshake_failures;

    let record = match state.store.charger(&charger_id).await {
        Ok(record) => record,
        Err(e) => {
            tracing::error!(charger = %charger_id, "handshake could not read the charger: {e:#}");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "central system unavailable",
            );
        }
    };
    match &record {
        None if state.config.unknown_chargers == UnknownChargers::Reject => {
            return refuse_failed(limiter, &[&ip_key], || {
                tracing::warn!(charger = %charger_id, %remote, "unknown charger refused");
                refuse(StatusCode::NOT_FOUND, "unknown charger")
            })
            .await;
        }
        Some(charger) => {
            if let Some(hash) = &charger.password_hash {
                let presented = basic_credentials(&headers);
                let ok = matches!(&presented, Some(auth) if auth.username() == charger_id && verify_password(auth.password(), hash));
                if !ok {
                    // Logged while under the limit; past it, a flood would
                    // only fill the log.
                    return refuse_failed(limiter, &[&id_key, &ip_key], || {
                        tracing::warn!(charger = %charger_id, %remote, presented = presented.is_some(), "charger failed Basic auth");
                        (
                            StatusCode::UNAUTHORIZED,
                            [(
                                header::WWW_AUTHENTICATE,
                                "Basic realm=\"OCPP\", charset=\"UTF-8\"",
                            )],
                            "charger authentication failed",
                        )
                            .into_response()
                    })
                    .await;
                }
            }
        }
        None => {}
    }

    let offered: Vec<String> = ws
        .requested_protocols()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        tracing::info!(charger = %charger_id, "charger offered no subprotocol; speaking ocpp1.6");
    } else if !offered.iter().any(|p| p.eq_ignore_ascii_case(SUBPROTOCOL)) {
        tracing::warn!(charger = %charger_id, ?offered, "no supported subprotocol offered");
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported subprotocol: this central system speaks ocpp1.6",
        );
    }

    let Ok(permit) = state.connection_slots.clone().try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "connection limit reached");
    };
    let limits = &state.config;
    let ws = ws
        .protocols([SUBPROTOCOL])
        // Explicit buffer sizes: the defaults (128 KiB read buffer each) would
        // cost gigabytes at tens of thousands of chargers.
        .read_buffer_size(limits.ws_read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_frame_bytes * 4)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes);
    let subprotocol = ws
        .selected_protocol()
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let registration = record.as_ref().map(|c| c.registration_status);
    let info = ConnectionInfo {
        charger_id,
        remote_addr: Some(remote),
        subprotocol,
        connected_at: now_ms(),
    };
    ws.on_failed_upgrade(|e| tracing::warn!("websocket upgrade failed: {e}"))
        .on_upgrade(move |socket| async move {
            let attachment = state.registry.attach(info).await;
            connection::serve(socket, state, attachment, registration).await;
            drop(permit);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_the_last_decoded_segment() {
        assert_eq!(identity_from_path("/ocpp/CP001").unwrap(), "CP001");
        assert_eq!(identity_from_path("/ocpp/site/CP%20002").unwrap(), "CP 002");
        assert!(identity_from_path("/ocpp/").is_err());
        assert!(identity_from_path(&format!("/ocpp/{}", "x".repeat(49))).is_err());
        assert!(identity_from_path(&format!("/ocpp/{}", "x".repeat(48))).is_ok());
    }
}
