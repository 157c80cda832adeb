//! Bearer tokens: HS256 JWTs with `sub`, `role` and `exp`, and nothing but
//! HS256 accepted.

use anyhow::{Context, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

pub const ROLES: &[&str] = &["driver", "admin"];

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// The configured secret, or the one generated on first start and kept in
    /// the database so that every restart (and every node) agrees on it.
    pub async fn load(configured: Option<&str>, store: &dyn Store) -> Result<Self> {
        if let Some(secret) = configured {
            anyhow::ensure!(
                secret.len() >= 16,
                "CSMS_JWT_SECRET must be at least 16 characters"
            );
            return Ok(Self::new(secret.as_bytes()));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let candidate = hex::encode(bytes);
        let kept = store
            .setting_or_insert("jwt_secret", &candidate)
            .await
            .context("keeping the JWT secret")?;
        if kept == candidate {
            tracing::warn!(
                "CSMS_JWT_SECRET is unset: generated a secret and kept it in the database"
            );
        }
        Ok(Self::new(kept.as_bytes()))
    }

    pub fn issue(&self, user_id: &str, role: &str, lifetime: Duration) -> Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            role: role.to_owned(),
            exp: now + lifetime.as_secs(),
            iat: Some(now),
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("signing a token")
    }

    /// Checks signature (HS256 only), `exp` (required) and `nbf` (if present).
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_verifies_and_a_foreign_one_does_not() {
        let keys = JwtKeys::new(b"0123456789abcdef0123");
        let token = keys.issue("u1", "admin", Duration::from_secs(60)).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role.as_str()), ("u1", "admin"));
        assert!(JwtKeys::new(b"another-secret-entirely")
            .verify(&token)
            .is_err());
    }
}

pub mod routes {
    //! `POST /api/auth/register`, `POST /api/auth/login`, `GET /api/auth/me`.

    use crate::api::error::{ok, ApiError, ApiResult};
    use crate::api::extract::{AuthUser, Body};
    use crate::state::AppState;
    use crate::store::UserRecord;
    use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
    use argon2::Argon2;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};

    pub fn router() -> Router<AppState> {
        Router::new()
            .route("/api/auth/register", post(register))
            .route("/api/auth/login", post(login))
            .route("/api/auth/me", get(me))
    }

    pub fn user_json(u: &UserRecord) -> Value {
        json!({
            "id": u.id, "email": u.email, "name": u.name, "role": u.role,
            "batteryCapacity": u.battery_capacity_wh.map(|wh| wh as f64 / 1000.0),
            "createdAt": crate::ocpp::time::format_ms(u.created_at),
        })
    }

    fn valid_email(email: &str) -> bool {
        let Some((local, domain)) = email.split_once('@') else {
            return false;
        };
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && email.len() <= 254
            && !email.contains(char::is_whitespace)
    }

    /// Argon2id with a random salt; run off the async threads (it is slow on purpose).
    async fn hash_password(password: String) -> anyhow::Result<String> {
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing: {e}"))
        })
        .await?
    }

    async fn verify_password(password: String, hash: String) -> bool {
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    async fn register(
        State(state): State<AppState>,
        Body(body): Body,
    ) -> ApiResult<(StatusCode, Json<Value>)> {
        let email = body.string("email")?.to_lowercase();
        let password = body.secret("password")?;
        let name = body.string("name")?;
        if !valid_email(&email) {
            return Err(ApiError::invalid("email", "email is not a valid address"));
        }
        if password.chars().count() < 8 || password.len() > 1024 {
            return Err(ApiError::invalid(
                "password",
                "password must be at least 8 characters",
            ));
        }
        if name.chars().count() > 100 {
            return Err(ApiError::invalid(
                "name",
                "name must be at most 100 characters",
            ));
        }
        if state.store.user_by_email(&email).await?.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "EMAIL_TAKEN",
                "An account with this email already exists",
            ));
        }
        let user = UserRecord {
            id: uuid::Uuid::new_v4().to_string(),
            email: Some(email),
            name,
            role: "driver".into(),
            password_hash: Some(hash_password(password).await?),
            battery_capacity_wh: None,
            created_at: crate::ocpp::time::now_ms(),
        };
        state.store.upsert_user(&user).await.map_err(|e| {
            // Two registrations racing for one email: the unique index decides.
            if crate::store::is_unique_violation(&e) {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "EMAIL_TAKEN",
                    "An account with this email already exists",
                )
            } else {
                ApiError::internal(e)
            }
        })?;
        let token = state
            .jwt
            .issue(&user.id, &user.role, state.config.token_ttl)?;
        Ok((
            StatusCode::CREATED,
            ok(json!({ "token": token, "user": user_json(&user) })),
        ))
    }

    async fn login(State(state): State<AppState>, Body(body): Body) -> ApiResult<Json<Value>> {
        let email = body.string("email")?.to_lowercase();
        let password = body.secret("password")?;
        let invalid = || ApiError::unauthorized("INVALID_CREDENTIALS", "Invalid email or password");
        let user = state
            .store
            .user_by_email(&email)
            .await?
            .ok_or_else(invalid)?;
        let hash = user.password_hash.clone().ok_or_else(invalid)?;
        if !verify_password(password, hash).await {
            return Err(invalid());
        }
        let token = state
            .jwt
            .issue(&user.id, &user.role, state.config.token_ttl)?;
        Ok(ok(json!({ "token": token, "user": user_json(&user) })))
    }

    async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
        let stored = state.store.user(&user.id).await?;
        Ok(ok(match stored {
            Some(u) => user_json(&u),
            None => json!({ "id": user.id, "role": user.role }),
        }))
    }
}
