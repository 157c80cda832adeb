//! The HTTP side: health, and (as it grows) the driver and operator REST API.
//! Each resource module exposes a `router()`; [`router`] merges them.

pub mod admin;
pub mod auth;
pub mod charging;
pub mod console;
pub mod console_api;
pub mod error;
pub mod events;
pub mod extract;
pub mod local_lists;
pub mod openapi;
pub mod payments;
pub mod profiles;
pub mod reservations;
pub mod sites;

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(auth::routes::router())
        .merge(charging::router())
        .merge(admin::router())
        .merge(events::router())
        .merge(payments::router())
        .merge(reservations::router())
        .merge(profiles::router())
        .merge(local_lists::router())
        .merge(sites::router())
        .merge(openapi::router())
        .merge(console_api::router())
        .merge(console::router())
        .fallback(not_found)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(health, ready, metrics))]
pub(crate) struct Doc;

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("No such endpoint")
}

#[utoipa::path(get, path = "/health", operation_id = "health", tag = "operating",
    responses(
        (status = 200, description = "The database answers and takes writes", body = openapi::Probe,
         example = json!({"status": "ok"})),
        (status = 503, description = "The database is unreachable or refuses writes", body = openapi::Probe),
    ))]
/// Liveness: 200 once the database answers and the writer is committing;
/// 503 with the reason, within a second, when the database cannot be reached
/// or refuses writes (a full disk, a read-only file).
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    probe(&state, "health check").await
}

#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "operating",
    responses(
        (status = 200, description = "Ready for chargers and requests", body = openapi::Probe),
        (status = 503, description = "Shutting down, or the database is unreachable or refuses writes", body = openapi::Probe,
         example = json!({"status": "unavailable", "reason": "the server is shutting down"})),
    ))]
/// Readiness, for load balancers: what `/health` checks, and 503 from the
/// moment the server starts shutting down, so no new charger or request is
/// sent to a node that is leaving.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if *state.shutdown.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": "the server is shutting down" })),
        );
    }
    probe(&state, "readiness check").await
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operating",
    responses((status = 200, description = "Prometheus metrics, OpenMetrics text exposition",
               content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
/// Prometheus metrics (OpenMetrics text). Unauthenticated, like `/health`:
/// expose the port to the scraper, not to the internet, or put it behind
/// the proxy's own access rules.
async fn metrics(
    State(state): State<AppState>,
) -> Result<axum::response::Response, error::ApiError> {
    use axum::response::IntoResponse;
    let text = state
        .metrics
        .render(state.store.as_ref(), state.registry.count())
        .await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn probe(state: &AppState, what: &str) -> (StatusCode, Json<Value>) {
    let store = &state.store;
    let check = async {
        store
            .ping()
            .await
            .map_err(|e| format!("the database is unreachable: {e:#}"))?;
        if let Some(failure) = store.write_failure() {
            // The last writes failed: see whether it takes one now.
            store
                .probe_write()
                .await
                .map_err(|_| format!("the database refuses writes: {failure}"))?;
        }
        Ok::<(), String>(())
    };
    // Under a second in all: a probe that cannot tell within that is down.
    let problem = match tokio::time::timeout(std::time::Duration::from_millis(800), check).await {
        Err(_) => Some("the database did not answer in time".to_owned()),
        Ok(result) => result.err(),
    };
    match problem {
        None => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Some(reason) => {
            tracing::error!("{what}: {reason}");
            state.metrics.database_error();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "reason": reason })),
            )
        }
    }
}
