//! The HTTP side: health, and (as it grows) the driver and operator REST API.
//! Each resource module exposes a `router()`; [`router`] merges them.

pub mod admin;
pub mod auth;
pub mod charging;
pub mod error;
pub mod extract;
pub mod payments;

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .merge(auth::routes::router())
        .merge(charging::router())
        .merge(admin::router())
        .merge(payments::router())
        .fallback(not_found)
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("No such endpoint")
}

/// 200 once the database answers (migrations ran before the listener opened).
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(e) => {
            tracing::error!("health check: database unreachable: {e:#}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable" })),
            )
        }
    }
}
