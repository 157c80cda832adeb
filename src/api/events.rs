//! Live events over Server-Sent Events: a driver's own session, and
//! everything for operators. The engine publishes each event after the
//! change is committed (see `engine::events`); these handlers only filter
//! and forward.

use super::error::ApiResult;
use super::extract::{AdminUser, AuthUser};
use crate::engine::events::Event;
use crate::engine::view::session_json;
use crate::state::AppState;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/charging/sessions/active/events", get(driver_events))
        .route("/api/admin/events", get(admin_events))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(driver_events, admin_events))]
pub(crate) struct Doc;

fn sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .event(event.name)
        .data(event.data.to_string())
}

/// The events `keep` lets through, until the server shuts down. A listener
/// too slow to keep up gets a `lagged` event saying how many it missed.
fn forward(
    state: &AppState,
    keep: impl Fn(&Event) -> bool + Send + 'static,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let receiver = state.engine.events().subscribe();
    let shutdown = state.shutdown.clone();
    stream::unfold(
        (receiver, shutdown, keep),
        |(mut receiver, mut shutdown, keep)| async move {
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                let next = tokio::select! {
                    next = receiver.recv() => next,
                    _ = shutdown.changed() => return None,
                };
                let out = match next {
                    Ok(event) if keep(&event) => sse(&event),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => SseEvent::default()
                        .event("lagged")
                        .data(json!({ "missed": missed }).to_string()),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(out), (receiver, shutdown, keep)));
            }
        },
    )
}

fn keep_alive() -> KeepAlive {
    KeepAlive::new().interval(Duration::from_secs(15))
}

/// The driver's own sessions: `session.current` first (the active session
/// as it stands, or null), then `session.started`, `session.updated` (energy,
/// power, cost, battery), `session.completed` and `session.cancelled`, and
/// their payment links (`payment.link_created`, `payment.paid`).
#[utoipa::path(get, path = "/api/charging/sessions/active/events", operation_id = "streamSessionEvents", tag = "events", security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "Server-Sent Events, each `data` a JSON object: `session.current` first (the active \
            session or null), then `session.started`, `session.updated`, `session.completed`, `session.cancelled` \
            (data: a Session), `payment.link_created`, `payment.paid` (data: a PaymentLink), and `lagged` \
            (`{missed}`) when the listener fell behind. Sent after the change is committed. A comment every 15 s keeps the stream open."),
        (status = 401, description = "No token, or an invalid or expired one", body = crate::api::openapi::ErrorBody),
    ))]
async fn driver_events(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    // Subscribe before reading the current session, so no change falls
    // between the two.
    let user_id = user.id.clone();
    let live = forward(&state, move |e| {
        e.user_id.as_deref() == Some(user_id.as_str())
    });
    let current = state.store.active_session(&user.id).await?;
    let first = SseEvent::default().event("session.current").data(
        current
            .map(|s| session_json(&s, Utc::now()))
            .unwrap_or(serde_json::Value::Null)
            .to_string(),
    );
    let stream = stream::once(async move { Ok(first) }).chain(live);
    Ok(Sse::new(stream).keep_alive(keep_alive()).into_response())
}

/// Everything, for operators: chargers connecting and disconnecting,
/// connector status, sessions, anomalies, payments.
#[utoipa::path(get, path = "/api/admin/events", operation_id = "streamAdminEvents", tag = "events", security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "Server-Sent Events for operators: `charger.connected`, `charger.disconnected`, \
            `connector.status` (`{chargerId, connectorId, status, errorCode, info, timestamp}`), the session events \
            (data: a Session), `anomaly` (`{chargerId, transactionId, kind, detail, occurredAt}`), \
            `payment.link_created`, `payment.paid`, and `lagged`."),
        (status = 401, description = "No token, or an invalid or expired one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::api::openapi::ErrorBody),
    ))]
async fn admin_events(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let stream = forward(&state, |_| true);
    Ok(Sse::new(stream).keep_alive(keep_alive()).into_response())
}
