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

/// Liveness: 200 once the database answers and the writer is committing;
/// 503 with the reason, within a second, when the database cannot be reached
/// or refuses writes (a full disk, a read-only file).
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
            tracing::error!("health check: {reason}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "reason": reason })),
            )
        }
    }
}
