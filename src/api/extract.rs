//! Extractors: the caller from the bearer token, and request bodies and
//! query strings read field by field so every mistake is a 400 that names
//! the field, never a 500 and never a half-applied change.

use super::error::ApiError;
use crate::engine::service::Caller;
use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde_json::{Map, Value};

/// The authenticated caller: a valid HS256 token's subject and role.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub role: String,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }

    pub fn caller(&self) -> Caller {
        Caller {
            user_id: self.id.clone(),
            is_admin: self.is_admin(),
        }
    }

    /// A driver may act for themselves only; an admin for anyone.
    pub fn may_act_for(&self, user_id: &str) -> Result<(), ApiError> {
        if self.id == user_id || self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("You may only act on your own account"))
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        }) else {
            return Err(ApiError::unauthorized(
                "MISSING_TOKEN",
                "Authentication required: send Authorization: Bearer <token>",
            ));
        };
        let claims = state.jwt.verify(token.trim()).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                ApiError::unauthorized("TOKEN_EXPIRED", "Token has expired")
            }
            _ => ApiError::unauthorized("INVALID_TOKEN", "Invalid token"),
        })?;
        if !crate::api::auth::ROLES.contains(&claims.role.as_str()) || claims.sub.is_empty() {
            return Err(ApiError::unauthorized("INVALID_TOKEN", "Invalid token"));
        }
        Ok(AuthUser {
            id: claims.sub,
            role: claims.role,
        })
    }
}

/// An authenticated caller with the admin role (403 for a driver).
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.is_admin() {
            return Err(ApiError::forbidden("This action needs the admin role"));
        }
        Ok(AdminUser(user))
    }
}

/// The highest connector number a client may name: OCPP numbers a
/// charger's connectors from 1, and no charger has a thousand.
pub const MAX_CONNECTOR: i64 = 1000;

/// True for `application/json` and `application/*+json` (any case, any
/// parameters such as `charset`).
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.strip_prefix("application/") {
        Some("json") => true,
        Some(subtype) => subtype.len() > "+json".len() && subtype.ends_with("+json"),
        None => false,
    }
}

/// A JSON object body. A body whose Content-Type is not JSON is a 415 (a
/// form or text that happens to parse must not be applied as if the client
/// meant JSON); one that is not JSON, or not an object, is a 400.
pub struct Body(pub Fields);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or(""));
        if !content_type.is_some_and(is_json_media_type) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Request body must be JSON, sent with Content-Type: application/json",
            )
            .with_details(serde_json::json!({ "contentType": content_type })));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_BODY",
                    format!("Could not read the body: {e}"),
                )
            })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_JSON",
                "Request body is not valid JSON",
            )
            .with_details(serde_json::json!({ "reason": e.to_string() }))
        })?;
        match value {
            Value::Object(map) => Ok(Body(Fields(map))),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_JSON",
                "Request body must be a JSON object",
            )),
        }
    }
}

/// Typed, named access to a JSON object's fields.
pub struct Fields(pub Map<String, Value>);

impl Fields {
    fn present(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.present(name)
    }

    pub fn string(&self, name: &str) -> Result<String, ApiError> {
        self.opt_string(name)?
            .ok_or_else(|| ApiError::invalid(name, format!("{name} is required")))
    }

    /// A secret, taken exactly as sent (no trimming).
    pub fn secret(&self, name: &str) -> Result<String, ApiError> {
        self.opt_secret(name)?
            .ok_or_else(|| ApiError::invalid(name, format!("{name} is required")))
    }

    pub fn opt_secret(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(Value::String(_)) => {
                Err(ApiError::invalid(name, format!("{name} must not be empty")))
            }
            Some(_) => Err(ApiError::invalid(name, format!("{name} must be a string"))),
        }
    }

    pub fn opt_string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Some(Value::String(_)) => {
                Err(ApiError::invalid(name, format!("{name} must not be empty")))
            }
            Some(_) => Err(ApiError::invalid(name, format!("{name} must be a string"))),
        }
    }

    pub fn number(&self, name: &str) -> Result<f64, ApiError> {
        self.opt_number(name)?
            .ok_or_else(|| ApiError::invalid(name, format!("{name} is required")))
    }

    pub fn opt_number(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| ApiError::invalid(name, format!("{name} is out of range"))),
            Some(_) => Err(ApiError::invalid(name, format!("{name} must be a number"))),
        }
    }

    pub fn opt_integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(name, format!("{name} must be a whole number"))),
            Some(_) => Err(ApiError::invalid(
                name,
                format!("{name} must be a whole number"),
            )),
        }
    }

    /// A connector may be given as `"connector-1"` or as `1` (1 to
    /// [`MAX_CONNECTOR`]).
    pub fn connector(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .filter(|n| (1..=MAX_CONNECTOR).contains(n))
                .map(|n| Some(format!("connector-{n}")))
                .ok_or_else(|| {
                    ApiError::invalid(
                        name,
                        format!("{name} must be a connector number from 1 to {MAX_CONNECTOR}"),
                    )
                }),
            Some(_) => self.opt_string(name),
        }
    }
}

/// The query string as name → value (decoded by `serde_urlencoded`, through
/// axum's `Query`; a name given twice keeps its last value), with typed
/// getters that refuse malformed values with a 400 naming the parameter.
pub struct Query(pub std::collections::HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map_err(
                |e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_QUERY",
                        "Query string is malformed",
                    )
                    .with_details(serde_json::json!({ "reason": e.body_text() }))
                },
            )?;
        Ok(Query(pairs.into_iter().collect()))
    }
}

impl Query {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A whole number within `min..=max_accepted`; values above `clamp_to`
    /// are clamped (as `limit` is), below `min` or malformed are a 400.
    pub fn integer(
        &self,
        name: &str,
        default: i64,
        min: i64,
        clamp_to: i64,
    ) -> Result<i64, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(text) => {
                let n: i64 = text.trim().parse().map_err(|_| {
                    ApiError::invalid(name, format!("{name} must be a whole number"))
                })?;
                if n < min {
                    return Err(ApiError::invalid(
                        name,
                        format!("{name} must be at least {min}"),
                    ));
                }
                Ok(n.min(clamp_to))
            }
        }
    }

    /// `limit` (1 to `max`, larger is clamped; `default` when absent) and
    /// `offset` (0 or more).
    pub fn page(&self, default: i64, max: i64) -> Result<crate::store::Page, ApiError> {
        Ok(crate::store::Page {
            limit: self.integer("limit", default, 1, max)?,
            offset: self.integer("offset", 0, 0, i64::MAX)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{is_json_media_type, Query};
    use axum::extract::FromRequestParts;

    async fn query(uri: &str) -> Query {
        let (mut parts, ()) = axum::http::Request::get(uri).body(()).unwrap().into_parts();
        Query::from_request_parts(&mut parts, &()).await.unwrap()
    }

    #[tokio::test]
    async fn query_strings_are_decoded_and_read_by_name() {
        let q = query("/x?filter=this%2Dmonth&a+b=c%20d&limit=5&limit=7&empty=&bare").await;
        assert_eq!(q.get("filter"), Some("this-month"));
        assert_eq!(q.get("a b"), Some("c d"));
        assert_eq!(q.get("empty"), Some(""));
        assert_eq!(q.get("bare"), Some(""));
        assert_eq!(q.get("missing"), None);
        assert_eq!(
            q.integer("limit", 50, 1, 100).unwrap(),
            7,
            "the last one wins"
        );
        assert_eq!(q.integer("empty", 50, 1, 100).unwrap(), 50);
        assert_eq!(q.integer("offset", 0, 0, i64::MAX).unwrap(), 0);
        assert!(query("/x").await.0.is_empty());

        let q = query("/x?limit=abc&offset=-1&big=500").await;
        for (name, min) in [("limit", 1), ("offset", 0)] {
            let e = q.integer(name, 0, min, 100).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(e.details["field"], name);
        }
        assert_eq!(q.integer("big", 0, 1, 100).unwrap(), 100, "clamped");
    }

    #[test]
    fn json_media_types_are_recognised() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            "application/merge-patch+json",
            "application/vnd.api+json ; q=1",
        ] {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in [
            "",
            "text/plain",
            "text/json",
            "application/jsonx",
            "application/+json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "json",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }
}
