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
        install_hmac_crypto();
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

/// A person's password as registration stores it: argon2id with a random
/// salt. Slow on purpose; the API calls it off the async threads.
pub fn hash_user_password(password: &str) -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))
}

/// Makes jsonwebtoken sign and verify with [`HMAC_ONLY`]. Idempotent; called
/// by [`JwtKeys::new`], and by anyone who signs tokens with jsonwebtoken
/// directly (tests) before a `JwtKeys` exists.
pub fn install_hmac_crypto() {
    // Fails only when a provider is already installed, which is this one:
    // nothing else in the process installs one.
    let _ = HMAC_ONLY.install_default();
}

/// jsonwebtoken's crypto, HMAC only. Its `rust_crypto` feature would bring
/// RSA, ECDSA and EdDSA (and with them the `rsa` crate and its advisory,
/// RUSTSEC-2023-0071) for algorithms this server never accepts; its
/// `aws_lc_rs` feature a C library beside the `ring` rustls already uses.
/// HMAC needs only `hmac` and `sha2`, which the server uses anyway. HS384
/// and HS512 are here so a token signed with them is refused by
/// [`Validation`] as the wrong algorithm rather than panicking a signer.
/// No JWKs are read, so the JWK helpers are the library's unimplemented ones.
pub static HMAC_ONLY: jsonwebtoken::crypto::CryptoProvider = jsonwebtoken::crypto::CryptoProvider {
    signer_factory: hmac_jwt::signer,
    verifier_factory: hmac_jwt::verifier,
    jwk_utils: jsonwebtoken::crypto::JwkUtils::new_unimplemented(),
};

mod hmac_jwt {
    use hmac::{Hmac, Mac};
    use jsonwebtoken::crypto::{JwtSigner, JwtVerifier};
    use jsonwebtoken::errors::{Error, ErrorKind};
    use jsonwebtoken::signature::{self, Signer, Verifier};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
    use sha2::{Sha256, Sha384, Sha512};

    /// One HMAC keyed with the secret, for one algorithm.
    enum Keyed {
        Hs256(Hmac<Sha256>),
        Hs384(Hmac<Sha384>),
        Hs512(Hmac<Sha512>),
    }

    impl Keyed {
        fn new(algorithm: &Algorithm, secret: &[u8]) -> Result<Self, Error> {
            let bad_key = |_| Error::from(ErrorKind::InvalidKeyFormat);
            Ok(match algorithm {
                Algorithm::HS256 => Keyed::Hs256(Hmac::new_from_slice(secret).map_err(bad_key)?),
                Algorithm::HS384 => Keyed::Hs384(Hmac::new_from_slice(secret).map_err(bad_key)?),
                Algorithm::HS512 => Keyed::Hs512(Hmac::new_from_slice(secret).map_err(bad_key)?),
                _ => return Err(ErrorKind::InvalidAlgorithm.into()),
            })
        }

        fn algorithm(&self) -> Algorithm {
            match self {
                Keyed::Hs256(_) => Algorithm::HS256,
                Keyed::Hs384(_) => Algorithm::HS384,
                Keyed::Hs512(_) => Algorithm::HS512,
            }
        }

        fn mac(&self, message: &[u8]) -> Vec<u8> {
            fn run<M: Mac + Clone>(mac: &M, message: &[u8]) -> Vec<u8> {
                let mut mac = mac.clone();
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            }
            match self {
                Keyed::Hs256(m) => run(m, message),
                Keyed::Hs384(m) => run(m, message),
                Keyed::Hs512(m) => run(m, message),
            }
        }

        fn check(&self, message: &[u8], tag: &[u8]) -> Result<(), signature::Error> {
            fn run<M: Mac + Clone>(
                mac: &M,
                message: &[u8],
                tag: &[u8],
            ) -> Result<(), signature::Error> {
                let mut mac = mac.clone();
                mac.update(message);
                // Constant-time comparison.
                mac.verify_slice(tag).map_err(signature::Error::from_source)
            }
            match self {
                Keyed::Hs256(m) => run(m, message, tag),
                Keyed::Hs384(m) => run(m, message, tag),
                Keyed::Hs512(m) => run(m, message, tag),
            }
        }
    }

    impl Signer<Vec<u8>> for Keyed {
        fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
            Ok(self.mac(message))
        }
    }

    impl Verifier<Vec<u8>> for Keyed {
        fn verify(&self, message: &[u8], tag: &Vec<u8>) -> Result<(), signature::Error> {
            self.check(message, tag)
        }
    }

    impl JwtSigner for Keyed {
        fn algorithm(&self) -> Algorithm {
            Keyed::algorithm(self)
        }
    }

    impl JwtVerifier for Keyed {
        fn algorithm(&self) -> Algorithm {
            Keyed::algorithm(self)
        }
    }

    pub fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
        Ok(Box::new(Keyed::new(algorithm, key.try_get_hmac_secret()?)?))
    }

    pub fn verifier(
        algorithm: &Algorithm,
        key: &DecodingKey,
    ) -> Result<Box<dyn JwtVerifier>, Error> {
        Ok(Box::new(Keyed::new(algorithm, key.try_get_hmac_secret()?)?))
    }
}

/// Brakes on password guessing and on login floods.
///
/// - Failed logins are counted per account and per address (fixed memory,
///   see [`FailureLimiter`]); an account or address over its limit is
///   answered 429 with `Retry-After` without its password being checked,
///   until the window ends.
/// - Password hashing (argon2id: about 19 MiB and tens of milliseconds
///   each, on purpose) runs at most [`HASHING_AT_ONCE`] at a time; a login
///   or registration that cannot get a turn within [`HASHING_WAIT`] is
///   answered 503 with `Retry-After`, so a flood costs bounded memory and
///   CPU and the chargers' side of the server keeps its cores.
pub struct LoginLimits {
    accounts: crate::charger::auth::FailureLimiter,
    addresses: crate::charger::auth::FailureLimiter,
    hashing: tokio::sync::Semaphore,
}

/// Failed logins allowed per account, and per address, in [`LOGIN_WINDOW`].
pub const ACCOUNT_FAILURES: u32 = 5;
pub const ADDRESS_FAILURES: u32 = 30;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Password hashes computed at once.
pub const HASHING_AT_ONCE: usize = 4;
/// How long a login waits for a hashing turn before a 503.
pub const HASHING_WAIT: Duration = Duration::from_secs(5);

impl Default for LoginLimits {
    fn default() -> Self {
        use crate::charger::auth::FailureLimiter;
        LoginLimits {
            accounts: FailureLimiter::new(ACCOUNT_FAILURES, LOGIN_WINDOW),
            addresses: FailureLimiter::new(ADDRESS_FAILURES, LOGIN_WINDOW),
            hashing: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
        }
    }
}

impl LoginLimits {
    /// `Some(retry_after)` when the account or the address is over its limit.
    pub fn blocked(&self, email: &str, address: &str) -> Option<Duration> {
        self.accounts
            .blocked(&[email])
            .max(self.addresses.blocked(&[address]))
    }

    pub fn failed(&self, email: &str, address: &str) {
        self.accounts.record_failure(&[email]);
        self.addresses.record_failure(&[address]);
    }

    /// A turn at hashing a password, or `None` when none came in time.
    pub async fn hashing_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(HASHING_WAIT, self.hashing.acquire())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn password_hashing_waits_for_a_turn_and_gives_up_in_time() {
        let limits = LoginLimits::default();
        let mut held = Vec::new();
        for _ in 0..HASHING_AT_ONCE {
            held.push(limits.hashing_turn().await.expect("a free turn"));
        }
        // All turns taken: the next waits, then gives up.
        let began = tokio::time::Instant::now();
        assert!(limits.hashing_turn().await.is_none());
        assert_eq!(began.elapsed(), HASHING_WAIT);
        // One given back: the next gets it at once.
        held.pop();
        assert!(limits.hashing_turn().await.is_some());
    }

    #[test]
    fn failed_logins_block_the_account_and_not_others() {
        let limits = LoginLimits::default();
        for _ in 0..ACCOUNT_FAILURES {
            assert!(limits.blocked("account:a@x.io", "ip:192.0.2.1").is_none());
            limits.failed("account:a@x.io", "ip:192.0.2.1");
        }
        let wait = limits
            .blocked("account:a@x.io", "ip:192.0.2.9")
            .expect("blocked");
        assert!(wait <= LOGIN_WINDOW && wait > Duration::ZERO);
        assert!(limits.blocked("account:b@x.io", "ip:192.0.2.1").is_none());
    }

    #[test]
    fn hs256_matches_an_independently_computed_signature() {
        // RFC 7515 appendix A.1: the HS256 example and its signature.
        use base64::Engine;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let key = jsonwebtoken::DecodingKey::from_secret(&secret);
        let header = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
        let payload = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let signature = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        install_hmac_crypto();
        let message = format!("{header}.{payload}");
        assert!(jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &key,
            Algorithm::HS256
        )
        .unwrap());
        assert!(
            !jsonwebtoken::crypto::verify(signature, b"tampered", &key, Algorithm::HS256).unwrap()
        );
        assert!(jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &key,
            Algorithm::RS256
        )
        .is_err());
    }

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
    use crate::api::openapi::{self as doc, Data};
    use crate::state::AppState;
    use crate::store::UserRecord;
    use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
    use argon2::Argon2;
    use axum::extract::{ConnectInfo, State};
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

    /// A turn at the bounded password hashing, or 503 with `Retry-After`.
    async fn hashing_turn(state: &AppState) -> ApiResult<tokio::sync::SemaphorePermit<'_>> {
        state.login_failures.hashing_turn().await.ok_or_else(|| {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "BUSY",
                "Too many logins at once; try again shortly",
            );
            e.retry_after_secs = Some(1);
            e
        })
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

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(register, login, me))]
    pub(crate) struct Doc;

    #[utoipa::path(post, path = "/api/auth/register", operation_id = "register", tag = "auth",
        request_body(content = doc::Register, example = json!({"email": "ada@example.com", "password": "correct-horse-9", "name": "Ada"})),
        responses(
            (status = 201, description = "Registered as a driver, with a token", body = Data<doc::TokenAndUser>),
            (status = 400, description = "Invalid email, a password under 8 characters, a missing name", body = doc::ErrorBody),
            (status = 409, description = "`EMAIL_TAKEN`", body = doc::ErrorBody),
            (status = 503, description = "`BUSY`: too many passwords being hashed at once; retry", body = doc::ErrorBody),
        ))]
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
            password_hash: Some({
                let _turn = hashing_turn(&state).await?;
                hash_password(password).await?
            }),
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

    #[utoipa::path(post, path = "/api/auth/login", operation_id = "login", tag = "auth",
        request_body = doc::Login,
        responses(
            (status = 200, description = "A token", body = Data<doc::TokenAndUser>),
            (status = 401, description = "`INVALID_CREDENTIALS`", body = doc::ErrorBody),
            (status = 429, description = "`TOO_MANY_ATTEMPTS`: 5 failures for the account or 30 from the address within 15 minutes; see `Retry-After`", body = doc::ErrorBody),
            (status = 503, description = "`BUSY`: too many passwords being hashed at once; retry", body = doc::ErrorBody),
        ))]
    async fn login(
        State(state): State<AppState>,
        ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
        Body(body): Body,
    ) -> ApiResult<Json<Value>> {
        let email = body.string("email")?.to_lowercase();
        let password = body.secret("password")?;
        let limits = &state.login_failures;
        let account = format!("account:{email}");
        let address = crate::charger::auth::address_key(remote.ip());
        if let Some(retry_after) = limits.blocked(&account, &address) {
            return Err(ApiError::too_many(
                "Too many failed logins; try again later",
                retry_after,
            ));
        }
        let invalid = || {
            limits.failed(&account, &address);
            ApiError::unauthorized("INVALID_CREDENTIALS", "Invalid email or password")
        };
        let Some(user) = state.store.user_by_email(&email).await? else {
            return Err(invalid());
        };
        let Some(hash) = user.password_hash.clone() else {
            return Err(invalid());
        };
        let verified = {
            let _turn = hashing_turn(&state).await?;
            verify_password(password, hash).await
        };
        if !verified {
            return Err(invalid());
        }
        let token = state
            .jwt
            .issue(&user.id, &user.role, state.config.token_ttl)?;
        Ok(ok(json!({ "token": token, "user": user_json(&user) })))
    }

    #[utoipa::path(get, path = "/api/auth/me", operation_id = "getMe", tag = "auth", security(("bearer" = [])),
        responses(
            (status = 200, description = "The token's user", body = Data<doc::Me>),
            (status = 401, description = "No token, or an invalid or expired one", body = doc::ErrorBody),
        ))]
    async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
        let stored = state.store.user(&user.id).await?;
        Ok(ok(match stored {
            Some(u) => user_json(&u),
            None => json!({ "id": user.id, "role": user.role }),
        }))
    }
}
