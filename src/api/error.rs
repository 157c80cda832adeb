//! The API's one error type and its envelope:
//! `{"success": false, "error": "<sentence>", "code": "<MACHINE_CODE>", "details": ...}`.
//! Internal errors are logged with their cause and shown to clients only as
//! "Internal server error".

use crate::engine::EngineError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Sent as `Retry-After` (seconds), for 429 and 503.
    pub retry_after_secs: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            retry_after_secs: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// A 400 naming the field at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message.clone())
            .with_details(json!({ "field": field, "reason": message }))
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 429 with `Retry-After`.
    pub fn too_many(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_ATTEMPTS", message);
        e.retry_after_secs = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
        e
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn internal(e: anyhow::Error) -> Self {
        tracing::error!("internal error: {e:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Internal server error",
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        match e {
            // The seed answers these with 400, and so do we.
            EngineError::ActiveSessionExists => {
                ApiError::new(S::BAD_REQUEST, "ACTIVE_SESSION_EXISTS", message)
            }
            EngineError::NoActiveSession => {
                ApiError::new(S::BAD_REQUEST, "NO_ACTIVE_SESSION", message)
            }
            EngineError::SessionNotFound => {
                ApiError::new(S::BAD_REQUEST, "SESSION_NOT_FOUND", message)
            }
            EngineError::SessionNotActive => {
                ApiError::new(S::BAD_REQUEST, "SESSION_NOT_ACTIVE", message)
            }
            EngineError::NotOwner => ApiError::new(S::FORBIDDEN, "FORBIDDEN", message),
            EngineError::ConnectorBusy(_) => ApiError::new(S::CONFLICT, "CONNECTOR_BUSY", message),
            EngineError::ChargerOffline(_) => {
                ApiError::new(S::CONFLICT, "CHARGER_OFFLINE", message)
            }
            EngineError::ChargerRejected(_) => {
                ApiError::new(S::CONFLICT, "CHARGER_REJECTED", message)
            }
            EngineError::ChargerTimeout => {
                ApiError::new(S::GATEWAY_TIMEOUT, "CHARGER_TIMEOUT", message)
            }
            EngineError::ChargerBadAnswer(_) => {
                ApiError::new(S::BAD_GATEWAY, "CHARGER_BAD_ANSWER", message)
            }
            EngineError::NotFound(_) => ApiError::not_found(message),
            EngineError::Forbidden(_) => ApiError::forbidden(message),
            EngineError::Conflict { code, details, .. } => {
                ApiError::new(S::CONFLICT, code, message).with_details(details)
            }
            EngineError::Invalid { field, message } => ApiError::invalid(field, message),
            EngineError::Internal(e) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "success": false, "error": self.message, "code": self.code, "details": self.details });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// `{"success": true, "data": [...], "pagination": {"total", "limit", "offset"}}`.
pub fn paged<T: serde::Serialize>(
    items: &[T],
    total: i64,
    page: crate::store::Page,
) -> Json<Value> {
    Json(json!({
        "success": true,
        "data": items,
        "pagination": { "total": total, "limit": page.limit, "offset": page.offset },
    }))
}

/// `{"success": true, "data": ...}`.
pub fn ok(data: Value) -> Json<Value> {
    Json(json!({ "success": true, "data": data }))
}
